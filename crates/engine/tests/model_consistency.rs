//! Self-consistency of the forward pass on the real test models: the same positions give
//! the same logits, bit for bit, whether they come from one prefill, chunks of prefill, single decode
//! steps, or a batched decode step shared with other sequences.
mod model_support;

use candle_core::Tensor;
use hearth_engine::text::{Greedy, Model, Next, SeqCache, Want};

/// Deterministic in-vocabulary prompt ids (no tokenizer needed).
fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32).map(|i| 200 + (i * 7919 + salt * 104_729) % 20_000).collect()
}

fn row(t: &Tensor, i: usize) -> Tensor {
    t.narrow(0, i, 1).expect("row")
}

/// The same positions give the same logits, bit for bit, whatever the computation order:
/// every kernel computes each output with the same operations in the same order, so the
/// row count of a matmul (prefill, chunks, a batch) never changes a result. (A tolerance
/// would hide an order-dependent kernel; a wrong position, mask or cache slot moves the
/// logits far more.)
fn assert_identical(what: &str, a: &Tensor, b: &Tensor) {
    let (a_rows, b_rows) = (a.to_vec2::<f32>().expect("a"), b.to_vec2::<f32>().expect("b"));
    assert_eq!(a_rows.len(), b_rows.len(), "{what}: row counts");
    for (i, (ra, rb)) in a_rows.iter().zip(&b_rows).enumerate() {
        let differing = ra.iter().zip(rb).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert!(differing == 0, "{what}: row {i}: {differing} logits differ (largest relative difference {})", model_support::relative_max_diff(a, b));
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best })
}

/// Prefill of N tokens with all logits == prefill of N-1 then decode of the last token,
/// and == prefill in two chunks.
fn prefill_matches_decode(model: &dyn Model, name: &str) {
    let tokens = prompt(12, 1);
    let n = tokens.len();
    let mut cache = model.new_cache(32).expect("cache");
    let full = model.prefill(&tokens, &mut cache, true).expect("prefill");
    assert_eq!(full.dims2().expect("2d").0, n);
    assert_eq!(cache.len(), n);

    let mut cache = model.new_cache(32).expect("cache");
    let last_of_prefix = model.prefill(&tokens[..n - 1], &mut cache, false).expect("prefill");
    assert_eq!(last_of_prefix.dims2().expect("2d").0, 1);
    assert_identical(&format!("{name}: last-row prefill"), &row(&full, n - 2), &last_of_prefix);
    let decoded = model.decode(&tokens[n - 1..], &mut [&mut cache]).expect("decode");
    assert_identical(&format!("{name}: decode after prefill"), &row(&full, n - 1), &decoded);

    let mut cache = model.new_cache(32).expect("cache");
    let first = model.prefill(&tokens[..5], &mut cache, true).expect("prefill");
    let rest = model.prefill(&tokens[5..], &mut cache, true).expect("prefill");
    let chunked = Tensor::cat(&[first, rest], 0).expect("cat");
    assert_identical(&format!("{name}: chunked prefill"), &full, &chunked);
}

/// A cache of `capacity` per prompt, holding that prompt.
fn prefilled(model: &dyn Model, prompts: &[Vec<u32>], capacity: usize) -> Vec<SeqCache> {
    prompts
        .iter()
        .map(|p| {
            let mut cache = model.new_cache(capacity).expect("cache");
            model.prefill(p, &mut cache, false).expect("prefill");
            cache
        })
        .collect()
}

/// A batched decode step of 3 sequences at different positions == each decoded alone.
fn batched_decode_matches_single(model: &dyn Model, name: &str) {
    let prompts = [prompt(3, 2), prompt(9, 3), prompt(5, 4)];
    let (mut batched, mut single) = (prefilled(model, &prompts, 16), prefilled(model, &prompts, 16));
    let mut next = vec![11u32, 12, 13];
    for step in 0..3 {
        let mut refs: Vec<_> = batched.iter_mut().collect();
        let together = model.decode(&next, &mut refs).expect("batched decode");
        assert_eq!(together.dims2().expect("2d").0, 3);
        for (i, cache) in single.iter_mut().enumerate() {
            let alone = model.decode(&next[i..i + 1], &mut [cache]).expect("decode");
            assert_identical(&format!("{name}: step {step} sequence {i}"), &alone, &row(&together, i));
        }
        next = model_support::argmax_rows(&together);
    }
    for (b, s) in batched.iter().zip(&single) {
        assert_eq!(b.len(), s.len());
    }
}

/// A decode step gives the same logits, bit for bit, on one thread as on all of them:
/// the count a step runs on changes mid-stream when another process takes a core. (A
/// model's steps run on at most as many threads as the pool it was loaded from has.)
fn decode_is_the_same_on_one_thread(model: &dyn Model, name: &str) {
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    let single_model = one.install(|| model_support::load(name));
    // Two sequences at ~250 positions: enough attention work to go through the pool.
    let prompts = [prompt(250, 7), prompt(243, 8)];
    let (mut all, mut single) = (prefilled(model, &prompts, 256), prefilled(single_model.as_ref(), &prompts, 256));
    for step in 0..3u32 {
        let next = [20 + step, 30 + step];
        let mut refs: Vec<_> = all.iter_mut().collect();
        let on_all = model.decode(&next, &mut refs).expect("decode");
        let mut refs: Vec<_> = single.iter_mut().collect();
        let on_one = single_model.decode(&next, &mut refs).expect("decode");
        assert_eq!(on_all.to_vec2::<f32>().expect("logits"), on_one.to_vec2::<f32>().expect("logits"), "{name}: step {step}");
    }
}

/// A greedy decode step's token (`Want::Greedy`, which skips most logits on heads with a
/// 4-bit shadow) is the first argmax of the full row after the same adjustment, step
/// after step of a generation: plain, then with a presence penalty over the tokens so
/// far and a ban on one token, as the sampler sets them.
fn greedy_tokens_match_full_logits(model: &dyn Model, name: &str) {
    let prompts = [prompt(20, 9)];
    let (mut full, mut greedy) = (prefilled(model, &prompts, 96), prefilled(model, &prompts, 96));
    let mut token = 11;
    let mut generated: Vec<u32> = Vec::new();
    for step in 0..64 {
        let logits = model.decode(&[token], &mut [&mut full[0]]).expect("decode");
        let mut row = logits.to_vec2::<f32>().expect("logits").remove(0);
        let limit = row.len() - 3;
        let mut adjusted: Vec<u32> = if step >= 32 { generated.clone() } else { Vec::new() };
        let banned = 13;
        adjusted.push(banned);
        adjusted.sort_unstable();
        adjusted.dedup();
        let adjust = |id: u32, l: f32| {
            let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
            let l = if id == banned { l - 100.0 } else { l };
            if step >= 32 && generated.contains(&id) {
                l - 2.0
            } else {
                l
            }
        };
        for l in row.iter_mut() {
            *l = if l.is_nan() { f32::NEG_INFINITY } else { *l };
        }
        for &id in &adjusted {
            row[id as usize] = adjust(id, row[id as usize]);
        }
        let expected = argmax(&row[..limit]) as u32;
        let want = Want::Greedy(Greedy { limit, adjusted: &adjusted, adjust: &adjust });
        let next = model.decode_next(&[token], &mut [&mut greedy[0]], &[want]).expect("decode_next");
        assert_eq!(next, [Next::Token(expected)], "{name}: step {step}");
        generated.push(expected);
        token = expected;
    }
    assert_eq!(full[0].len(), greedy[0].len());
}

/// Errors, not panics, on bad input; a failed call leaves the cache unchanged.
fn rejects_bad_input(model: &dyn Model, name: &str) {
    let mut cache = model.new_cache(4).expect("cache");
    assert!(model.prefill(&[], &mut cache, false).is_err(), "{name}: empty prompt");
    assert!(model.prefill(&[u32::MAX], &mut cache, false).is_err(), "{name}: out-of-vocab id");
    assert!(model.prefill(&prompt(5, 5), &mut cache, false).is_err(), "{name}: over capacity");
    assert_eq!(cache.len(), 0);
    assert!(model.decode(&[1, 2], &mut [&mut cache]).is_err(), "{name}: tokens/caches mismatch");
    for wants in [&[][..], &[Want::Logits, Want::Logits][..]] {
        assert!(model.decode_next(&[1], &mut [&mut cache], wants).is_err(), "{name}: {} wants for one sequence", wants.len());
    }
    assert_eq!(cache.len(), 0);
    model.prefill(&prompt(4, 5), &mut cache, false).expect("fits exactly");
    assert!(model.decode(&[1], &mut [&mut cache]).is_err(), "{name}: full cache");
    assert_eq!((cache.len(), cache.capacity()), (4, 4));
}

fn check(file_name: &str) {
    let model = model_support::load(file_name);
    prefill_matches_decode(model.as_ref(), file_name);
    batched_decode_matches_single(model.as_ref(), file_name);
    decode_is_the_same_on_one_thread(model.as_ref(), file_name);
    greedy_tokens_match_full_logits(model.as_ref(), file_name);
    rejects_bad_input(model.as_ref(), file_name);
}

#[test]
fn smollm2_llama() {
    check(model_support::SMOLLM2);
}

#[test]
fn qwen2() {
    check(model_support::QWEN2);
}

#[test]
fn gemma3() {
    check(model_support::GEMMA3);
}

/// gemma3's local layers see only the last 512 positions: a 600-token prompt crosses the
/// window (and the 512-token prefill chunk); decode at the edge must agree with prefill.
#[test]
fn gemma3_sliding_window() {
    let model = model_support::load(model_support::GEMMA3);
    let tokens = prompt(600, 6);
    let n = tokens.len();
    let mut cache = model.new_cache(n).expect("cache");
    let full = model.prefill(&tokens, &mut cache, true).expect("prefill");
    let mut cache = model.new_cache(n).expect("cache");
    model.prefill(&tokens[..n - 2], &mut cache, false).expect("prefill");
    for i in n - 2..n {
        let decoded = model.decode(&tokens[i..i + 1], &mut [&mut cache]).expect("decode");
        assert_identical(&format!("position {i}"), &row(&full, i), &decoded);
    }
}
