//! Engine-level microbenchmark, no HTTP: prefill and decode rates of one GGUF model
//! straight through `Model`. Prints a markdown section (bench/text.sh appends it to
//! BENCHMARKS.md).
//!
//! `cargo run --release -p hearth-engine --example text_engine_bench -- MODEL.gguf [prefill|decode512]`
//! (`prefill`: only the prefill row, best of 10; `decode512`: only 300 decode steps
//! after a 512-token prompt; both for comparing kernel changes)
use candle_core::quantized::gguf_file;
use hearth_engine::text::load_model;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("usage: text_engine_bench MODEL.gguf");
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let t = Instant::now();
    let model = load_model(&content, &mut file)?;
    let load_s = t.elapsed().as_secs_f64();
    eprintln!("load {load_s:.2} s");
    let name = std::path::Path::new(&path).file_stem().unwrap().to_string_lossy().to_string();
    // Token ids well inside every vocabulary; content does not matter for speed.
    let prompt: Vec<u32> = (0..512u32).map(|i| 100 + (i * 37) % 5000).collect();

    if std::env::args().nth(2).as_deref() == Some("decode512") {
        let mut cache = model.new_cache(2048)?;
        model.prefill(&prompt, &mut cache, false)?;
        let t = Instant::now();
        for &token in &prompt[..300] {
            let mut caches = [&mut cache];
            model.decode(&[token], &mut caches)?;
        }
        println!("decode at 512: {:.1} tok/s", 300.0 / t.elapsed().as_secs_f64());
        return Ok(());
    }
    let mut rows = Vec::new();
    // Prefill 512 tokens (best of 3).
    let prefill_only = std::env::args().nth(2).as_deref() == Some("prefill");
    let mut best = f64::MAX;
    for _ in 0..if prefill_only { 10 } else { 3 } {
        let mut cache = model.new_cache(2048)?;
        let t = Instant::now();
        model.prefill(&prompt, &mut cache, false)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    rows.push(("prefill 512 tok/s".to_string(), 512.0 / best));
    if prefill_only {
        println!("{name}: prefill 512 tok/s {:.1}", 512.0 / best);
        return Ok(());
    }

    // Single-sequence decode, at empty context and after 512 tokens.
    for ctx in [0usize, 512] {
        let mut cache = model.new_cache(2048)?;
        let start = if ctx == 0 { &prompt[..1] } else { &prompt[..ctx] };
        model.prefill(start, &mut cache, false)?;
        let n = 64;
        let t = Instant::now();
        for &token in &prompt[..n] {
            let mut caches = [&mut cache];
            model.decode(&[token], &mut caches)?;
        }
        rows.push((format!("decode at {ctx} context tok/s"), n as f64 / t.elapsed().as_secs_f64()));
    }

    // Batched decode: 4 and 16 sequences, one step for all at once.
    for batch in [4usize, 16] {
        let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache(512)).collect::<Result<_, _>>()?;
        for c in caches.iter_mut() {
            model.prefill(&prompt[..16], c, false)?;
        }
        let steps = 32;
        let tokens: Vec<u32> = (0..batch as u32).map(|i| 200 + i).collect();
        let t = Instant::now();
        for _ in 0..steps {
            let mut refs: Vec<&mut _> = caches.iter_mut().collect();
            model.decode(&tokens, &mut refs)?;
        }
        rows.push((format!("decode, batch of {batch} (aggregate) tok/s"), (steps * batch) as f64 / t.elapsed().as_secs_f64()));
    }

    println!("\n### engine microbenchmark (no HTTP): {name}\n");
    println!("load {load_s:.2} s; threads: rayon default ({})\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("| test | hearth engine |\n|---|---|");
    for (label, v) in rows {
        println!("| {label} | {v:.1} |");
    }
    Ok(())
}
