//! `cargo run --release -p hearth-engine --example transcribe -- MODEL_DIR AUDIO [translate] [lang]`:
//! prints the segments and the real-time factor (`RUST_LOG=debug` adds per-window timings).
//! `BEAM=1` decodes greedily (default 5 beams); `WORDS=1` times the words.
use hearth_engine::audio::{decode_audio, Task, TranscribeOptions, WhisperEngine};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().collect();
    let engine = WhisperEngine::load(std::path::Path::new(&args[1]))?;
    let samples = decode_audio(std::fs::read(&args[2])?, Some(&args[2]), &Default::default())?;
    let task = if args.get(3).map(String::as_str) == Some("translate") { Task::Translate } else { Task::Transcribe };
    let beam_size = std::env::var("BEAM").ok().and_then(|b| b.parse().ok()).unwrap_or(5);
    let opts =
        TranscribeOptions { task, language: args.get(4).cloned(), beam_size, word_timestamps: std::env::var_os("WORDS").is_some(), ..Default::default() };
    let t = Instant::now();
    let out = engine.transcribe(&samples, &opts)?;
    let secs = t.elapsed().as_secs_f64();
    for s in &out.segments {
        println!(
            "[{:7.2} -> {:7.2}] t={:.1} lp={:.2} cr={:.2} ns={:.2} {}",
            s.start, s.end, s.temperature, s.avg_logprob, s.compression_ratio, s.no_speech_prob, s.text
        );
        if !s.words.is_empty() {
            println!("    {}", s.words.iter().map(|w| format!("{}@{:.2}-{:.2}", w.word.trim(), w.start, w.end)).collect::<Vec<_>>().join(" "));
        }
    }
    println!("text {}", out.text);
    println!("language {} duration {:.2}s took {:.2}s rtf {:.3}", out.language, out.duration, secs, secs / out.duration);
    Ok(())
}
