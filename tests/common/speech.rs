//! Speech for the audio tests, shared by the e2e tests (through `common`) and the
//! engine's whisper tests (by path): espeak-ng synthesis and word error counting.
#![allow(dead_code)]
use std::path::Path;
use std::process::Command;

/// Writes `text` spoken by the espeak-ng `voice` to `wav` (22.05 kHz 16-bit mono).
pub fn espeak(wav: &Path, voice: &str, text: &str) {
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(wav)
        .arg(text)
        .output()
        .unwrap_or_else(|e| panic!("running espeak-ng: {e} (install the Debian package espeak-ng; scripts/test.sh does)"));
    assert!(out.status.success(), "espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Lower-cased words, punctuation dropped (apostrophes kept).
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Word-level edit distance (substitutions, insertions, deletions).
pub fn word_errors(reference: &str, hypothesis: &str) -> usize {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut prev = row[0];
        row[0] = i;
        for j in 1..=h.len() {
            let sub = prev + usize::from(r[i - 1] != h[j - 1]);
            prev = row[j];
            row[j] = sub.min(row[j] + 1).min(row[j - 1] + 1);
        }
    }
    row[h.len()]
}

/// Word errors over the reference's length.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    word_errors(reference, hypothesis) as f64 / words(reference).len().max(1) as f64
}
