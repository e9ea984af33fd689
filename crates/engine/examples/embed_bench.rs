//! Engine-level embeddings benchmark, no HTTP: 512 mixed-length sentences in
//! length-sorted batches of 32 (as bench/embeddings does), then one short
//! sentence many times. Prints sentences/s and the CPU seconds the process
//! used, which stay meaningful when other work shares the cores.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p hearth-engine --example embed_bench -- MODEL_DIR`
use std::time::Instant;

use hearth_engine::embed::{EmbedConfig, EmbedEngine};

const WORDS: &str = "the a of to and in is it that for on with as was at by be this from or have an they which one you \
    were all we her she there would their will when who him been has more if no out do so can what up said about other \
    embedding vector search cluster retrieval semantic similarity sentence transformer model inference latency \
    throughput kitchen mountain river engine bread violin harbour glacier library museum festival parliament";

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: embed_bench MODEL_DIR");
    let engine = EmbedEngine::load(dir.as_ref(), EmbedConfig::default())?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    // Lengths skewed short, 4 to 90 words (about 35 tokens on average).
    let mut corpus: Vec<Vec<u32>> = (0..512)
        .map(|_| {
            let n = (4 + next() % 30 + if next() % 4 == 0 { next() % 60 } else { 0 }).min(90);
            engine.tokenize(&(0..n).map(|_| words[next() % words.len()]).collect::<Vec<_>>().join(" "))
        })
        .collect();
    corpus.sort_by_key(|ids| std::cmp::Reverse(ids.len()));
    let tokens: usize = corpus.iter().map(|ids| ids.len() + 2).sum();
    rt.block_on(engine.embed(corpus[..32].to_vec()))?;

    let rounds = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for _ in 0..rounds {
        let (t, cpu) = (Instant::now(), cpu_secs());
        for batch in corpus.chunks(32) {
            rt.block_on(engine.embed(batch.to_vec()))?;
        }
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
        println!("throughput: {:.0} sentences/s ({} tokens/sentence), {:.2} s wall, {:.2} CPU s", 512.0 / wall, tokens / 512, wall, cpu);
    }
    let short = engine.tokenize("How do I reset my password?");
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(engine.embed(vec![short.clone()])).expect("embed");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("latency: {:.2} ms median, {:.2} ms p90", times[25], times[45]);
    Ok(())
}
