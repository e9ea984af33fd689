//! Beam search against greedy decoding on the same clips, with the real
//! whisper-base. Speech is synthesised at test time by espeak-ng (a Debian
//! package scripts/test.sh installs) from sentences written for this test.
mod model_support;
#[path = "../../../tests/common/speech.rs"]
mod speech;
use hearth_engine::audio::{decode_audio, TranscribeOptions, WhisperEngine};

const SENTENCES: [&str; 6] = [
    "Seven brave sailors rowed the little boat through the storm.",
    "The baker sold the last loaf of rye bread before noon.",
    "A flock of geese flew low over the frozen pond.",
    "My uncle repairs old radios in his garage on weekends.",
    "The students waited quietly while the teacher read the names.",
    "Thick fog covered the harbour until late in the afternoon.",
];

fn speak(name: &str, voice: &str, text: &str) -> Vec<f32> {
    let wav = std::env::temp_dir().join(format!("hearth-search-{}-{name}.wav", std::process::id()));
    speech::espeak(&wav, voice, text);
    let samples = decode_audio(std::fs::read(&wav).unwrap(), Some("a.wav"), &Default::default()).expect("decode");
    let _ = std::fs::remove_file(&wav);
    samples
}

fn base() -> WhisperEngine {
    WhisperEngine::load(&model_support::model_path("whisper-base")).expect("load whisper-base")
}

/// Beam search keeps hypotheses greedy decoding drops (a misheard first word
/// it cannot take back): over the English set it makes no more word errors.
#[test]
fn beam_search_errs_no_more_than_greedy() {
    let engine = base();
    let (mut greedy_errors, mut beam_errors, mut total) = (0, 0, 0);
    // Two sentences per clip, two voices: 6 clips of about 7 s.
    for (i, pair) in SENTENCES.chunks(2).enumerate() {
        for voice in ["en-us", "en-gb+m3"] {
            let text = pair.join(" ");
            let samples = speak(&format!("{i}-{voice}"), voice, &text);
            let run = |beam_size| {
                let opts = TranscribeOptions { language: Some("en".into()), beam_size, ..Default::default() };
                engine.transcribe(&samples, &opts).expect("transcribe").text
            };
            let (greedy, beam) = (run(1), run(5));
            let (g, b) = (speech::word_errors(&text, &greedy), speech::word_errors(&text, &beam));
            eprintln!("{voice} clip {i}: greedy {g} errors {greedy:?}, beam {b} errors {beam:?}");
            greedy_errors += g;
            beam_errors += b;
            total += speech::words(&text).len();
        }
    }
    let (g, b) = (greedy_errors as f64 / total as f64, beam_errors as f64 / total as f64);
    eprintln!("WER greedy {g:.3}, beam 5 {b:.3} over {total} words");
    assert!(b <= g, "beam search WER {b:.3} is above greedy's {g:.3}");
    assert!(b < 0.25, "beam search WER {b:.3}: the model or search is broken");
}
