//! The output head: each row's logits, or for a greedy row only its token.
//!
//! Greedy decoding needs the largest adjusted logit, not all of a 150k vocabulary. The
//! head's 4-bit shadow (quant/shadow.rs) gives every logit to within a proven bound: a
//! token whose upper bound lies below the exact logit of the shadow's best row cannot
//! win, and only the rest (a handful on most steps) are computed exactly. The token is
//! the argmax of the full row, ties and NaN included, after reading ~60% of the head's
//! bytes. Where the shadow seldom decides (flat logits), greedy rows read the full head
//! directly.
use super::quant::{quantize_row, ActBlock, PackedWeight, Shadow, BLOCK, ROWS};
use super::weights::MatMul;
use super::{Greedy, Next, Want};
use crate::text::sampling::argmax;
use candle_core::quantized::QTensor;
use candle_core::Result;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Past this share of the vocabulary left to compute exactly (1/8), the full row is cheaper.
const MAX_CANDIDATES_DIV: usize = 8;
/// Rows per chunk of the scan for candidates.
const SCAN: usize = 16;
/// Candidate groups from which their exact products are shared out among the threads.
const PARALLEL_GROUPS: usize = 64;
/// The shadow reads ~60% of the head's bytes, and a row it leaves undecided reads the
/// full head too: it pays only when it decides most rows. It decides ~99% of the rows of
/// SmolLM2-135M and all of Qwen2.5-0.5B's (hundreds of hidden states after short
/// prompts). Below this share of recent rows decided (in 1/1024ths) greedy rows take the
/// full head directly...
const TRUST_NEEDED: u32 = 717;
/// ...except every this many steps, which try the shadow again.
const RETRY_EVERY: u32 = 16;

pub struct OutputHead {
    exact: MatMul,
    /// None for heads of 5 bits or fewer, or with a softcap.
    shadow: Option<Shadow>,
    softcap: Option<f32>,
    /// An exponential average of the share of rows the shadow decided, in 1/1024ths.
    trust: AtomicU32,
    /// Steps with greedy rows seen.
    greedy_steps: AtomicU32,
}

impl OutputHead {
    pub fn new(weight: &QTensor, exact: MatMul, softcap: Option<f32>) -> Result<Self> {
        let shadow = match (&exact, softcap) {
            (MatMul::Packed(_), None) => Shadow::from_qtensor(weight)?,
            _ => None,
        };
        Ok(Self { exact, shadow, softcap, trust: AtomicU32::new(1024), greedy_steps: AtomicU32::new(0) })
    }

    /// Logits `[rows, vocab]` of the rows of `h` (final-normed hidden states).
    pub fn logits(&self, h: &[f32]) -> Result<Vec<f32>> {
        let mut logits = Vec::new();
        self.exact.forward(h, &mut logits)?;
        if let Some(cap) = self.softcap {
            logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        Ok(logits)
    }

    /// What each row of `h` was asked for: its logits or its greedy token.
    pub fn next(&self, h: &[f32], wants: &[Want]) -> Result<Vec<Next>> {
        let width = h.len() / wants.len().max(1);
        let is_greedy = |w: &Want| matches!(w, Want::Greedy(_));
        // Greedy rows go through the shadow when there is one and it has lately paid;
        // every other row needs its full logits.
        let shadowed = match (&self.shadow, &self.exact) {
            (Some(shadow), MatMul::Packed(exact)) if wants.iter().any(is_greedy) && self.use_shadow() => Some((shadow, exact)),
            _ => None,
        };
        let (greedy, full): (Vec<usize>, Vec<usize>) = (0..wants.len()).partition(|&i| shadowed.is_some() && is_greedy(&wants[i]));
        let gather = |idx: &[usize]| -> Vec<f32> { idx.iter().flat_map(|&i| &h[i * width..(i + 1) * width]).copied().collect() };
        let mut out: Vec<Option<Next>> = wants.iter().map(|_| None).collect();
        if !full.is_empty() {
            let logits = if greedy.is_empty() { self.logits(h)? } else { self.logits(&gather(&full))? };
            for (&i, row) in full.iter().zip(logits.chunks(logits.len() / full.len())) {
                out[i] = Some(from_logits(&wants[i], row.to_vec()));
            }
        }
        if let Some((shadow, exact)) = shadowed {
            // One pass over the shadow for all greedy rows.
            let x = gather(&greedy);
            let n = shadow.weight.out_features();
            let mut approx = vec![0f32; greedy.len() * n];
            shadow.weight.matmul(&x, &mut approx)?;
            for ((&i, x), approx) in greedy.iter().zip(x.chunks(width)).zip(approx.chunks_mut(n)) {
                let Want::Greedy(g) = &wants[i] else { unreachable!() };
                let picked = pick(exact, shadow, x, approx, g);
                self.update_trust(picked.is_some());
                let token = match picked {
                    Some(token) => token,
                    None => {
                        let mut row = vec![0f32; exact.out_features()];
                        exact.matmul(x, &mut row)?;
                        argmax_adjusted(&mut row, g)
                    }
                };
                out[i] = Some(Next::Token(token));
            }
        }
        Ok(out.into_iter().map(|n| n.expect("every row answered")).collect())
    }

    /// Whether this step's greedy rows go through the shadow (see [`TRUST_NEEDED`]).
    fn use_shadow(&self) -> bool {
        let step = self.greedy_steps.fetch_add(1, Ordering::Relaxed);
        self.trust.load(Ordering::Relaxed) >= TRUST_NEEDED || step.is_multiple_of(RETRY_EVERY)
    }

    fn update_trust(&self, decided: bool) {
        let t = self.trust.load(Ordering::Relaxed);
        self.trust.store(t - t / 16 + if decided { 64 } else { 0 }, Ordering::Relaxed);
    }
}

/// The answer to `want` from a row of full logits.
fn from_logits(want: &Want, mut row: Vec<f32>) -> Next {
    match want {
        Want::Logits => Next::Logits(row),
        Want::Greedy(g) => Next::Token(argmax_adjusted(&mut row, g)),
    }
}

/// Argmax of the adjusted row: what the sampler does with a full row at temperature 0.
fn argmax_adjusted(row: &mut [f32], g: &Greedy) -> u32 {
    let limit = g.limit.min(row.len());
    let row = &mut row[..limit];
    for l in row.iter_mut() {
        *l = if l.is_nan() { f32::NEG_INFINITY } else { *l };
    }
    for &id in g.adjusted {
        if let Some(l) = row.get_mut(id as usize) {
            *l = (g.adjust)(id, *l);
        }
    }
    argmax(row)
}

/// The greedy token of activation row `x` given its shadow logits `approx` (overwritten);
/// None when the full row is needed (too many candidates or adjusted tokens, or values
/// not finite).
fn pick(exact: &PackedWeight, shadow: &Shadow, x: &[f32], approx: &mut [f32], g: &Greedy) -> Option<u32> {
    // The exact products quantize x as the matmul does; the bounds hold for that x.
    let mut act = vec![ActBlock::default(); x.len() / BLOCK];
    quantize_row(x, &mut act);
    let block_sq: Vec<f64> = act.iter().map(|b| b.q.iter().map(|&q| (b.d as f64 * q as f64).powi(2)).sum()).collect();
    let block_norms: Vec<f32> = block_sq.iter().map(|s| (s.sqrt() * (1.0 + 1e-6)) as f32).collect();
    let norm = (block_sq.iter().sum::<f64>().sqrt() * (1.0 + 1e-6)) as f32;
    let limit = g.limit.min(approx.len());
    let approx = &mut approx[..limit];
    // The scans of the whole row are written to vectorize (folds, chunks): they would
    // otherwise cost more than the few candidates' exact products.
    let finite = block_norms.iter().chain([&norm]).all(|n| n.is_finite()) && approx.iter().fold(true, |ok, a| ok & a.is_finite());
    if !finite || g.adjusted.len() > limit / MAX_CANDIDATES_DIV {
        return None;
    }
    let exact_at = |i: usize| exact.group_rows(&act, i / ROWS)[i % ROWS];

    // (id, adjusted exact logit) of every token that might win.
    let mut known: Vec<(u32, f32)> = Vec::new();
    // A value the winner's logit is known to reach.
    let mut floor = f32::NEG_INFINITY;
    for &id in g.adjusted {
        if (id as usize) < limit && !approx[id as usize].is_nan() {
            let v = (g.adjust)(id, exact_at(id as usize));
            floor = floor.max(v);
            known.push((id, v));
            // Known exactly now: NaN drops it from the bounds below.
            approx[id as usize] = f32::NAN;
        }
    }
    // The exact logits of the group holding the shadow's best row: the winner reaches
    // them, and they lie far closer to it than any lower bound (the bounds are worst
    // cases; actual errors are a small fraction of them). Qwen2.5-0.5B: a median of 7
    // candidates left, against 300 from the best lower bound.
    let highest = approx.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a));
    let top = approx.iter().position(|&a| a == highest)?;
    // A NaN product ranks below every number.
    let logit = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let group = top / ROWS * ROWS;
    for (i, v) in (group..limit.min(group + ROWS)).zip(exact.group_rows(&act, top / ROWS)) {
        // (An overflow to +inf would leave no candidate.)
        if v == f32::INFINITY {
            return None;
        }
        if !approx[i].is_nan() {
            floor = floor.max(logit(v));
            known.push((i as u32, logit(v)));
            approx[i] = f32::NAN;
        }
    }
    let slack = &shadow.slack[..limit];
    let mut candidates = might_win(approx, slack, norm, floor);
    // The per-block bound rules out about half of those left (SmolLM2-135M's flatter
    // logits leave hundreds).
    candidates.retain(|&i| approx[i] + shadow.refined_slack(i, &block_norms, norm) >= floor);
    if candidates.len() > limit / MAX_CANDIDATES_DIV {
        return None;
    }
    let mut groups: Vec<usize> = candidates.iter().map(|&i| i / ROWS).collect();
    groups.dedup();
    let products: Vec<[f32; ROWS]> = if groups.len() >= PARALLEL_GROUPS {
        groups.par_iter().map(|&gr| exact.group_rows(&act, gr)).collect()
    } else {
        groups.iter().map(|&gr| exact.group_rows(&act, gr)).collect()
    };
    let mut at = 0;
    for &i in &candidates {
        while groups[at] != i / ROWS {
            at += 1;
        }
        let v = products[at][i % ROWS];
        known.push((i as u32, logit(v)));
    }
    // Every other token's logit lies below the floor: the first maximum among these is
    // the full row's first maximum.
    known.sort_unstable_by_key(|&(id, _)| id);
    let mut best: Option<(u32, f32)> = None;
    for &(id, v) in &known {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((id, v));
        }
    }
    best.filter(|(_, v)| v.is_finite()).map(|(id, _)| id)
}

/// The rows i with `approx[i] + norm * slack[i] >= floor`, scanned `SCAN` at a time (in
/// vector registers).
fn might_win(approx: &[f32], slack: &[f32], norm: f32, floor: f32) -> Vec<usize> {
    let wins = |a: f32, s: f32| a + norm * s >= floor;
    let whole = approx.len() / SCAN * SCAN;
    let mut rows = Vec::new();
    for (c, (a, s)) in approx[..whole].chunks_exact(SCAN).zip(slack[..whole].chunks_exact(SCAN)).enumerate() {
        let (a, s): (&[f32; SCAN], &[f32; SCAN]) = (a.try_into().expect("SCAN"), s.try_into().expect("SCAN"));
        if (0..SCAN).fold(false, |any, j| any | wins(a[j], s[j])) {
            rows.extend((0..SCAN).filter(|&j| wins(a[j], s[j])).map(|j| c * SCAN + j));
        }
    }
    rows.extend((whole..approx.len()).filter(|&i| wins(approx[i], slack[i])));
    rows
}

#[cfg(test)]
mod tests {
    use super::super::quant::tests::pseudo_random;
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    /// A head of `n` pseudo-random rows of width `k`, where row `n - 1` repeats row 10
    /// (so that their logits tie exactly), and its dequantized rows.
    /// `likeness` times one shared row is added to every row.
    fn head(dtype: GgmlDType, n: usize, k: usize, likeness: f32) -> (OutputHead, Vec<f32>) {
        let mut wf = pseudo_random(n * k, n as u32);
        let shared = pseudo_random(k, 7);
        wf.chunks_mut(k).for_each(|row| row.iter_mut().zip(&shared).for_each(|(w, s)| *w += likeness * s));
        wf.copy_within(10 * k..11 * k, (n - 1) * k);
        let w = QTensor::quantize(&Tensor::from_vec(wf, (n, k), &Device::Cpu).unwrap(), dtype).unwrap();
        let dense = w.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let exact = MatMul::Packed(PackedWeight::from_qtensor(&w).unwrap().expect("packed"));
        (OutputHead::new(&w, exact, None).unwrap(), dense)
    }

    /// A hidden state near a mix of a few weight rows, the first leading: a peaked row of
    /// logits, as a trained model's mostly is.
    fn peaked(dense: &[f32], k: usize, rows: &[usize], seed: u32) -> Vec<f32> {
        let noise = pseudo_random(k + rows.len(), seed);
        let mut x: Vec<f32> = noise[..k].iter().map(|v| 0.3 * v).collect();
        for (j, &r) in rows.iter().enumerate() {
            // The first row leads.
            let weight = if j == 0 { 2.0 } else { 1.0 } + 0.5 * noise[k + j];
            x.iter_mut().zip(&dense[r * k..(r + 1) * k]).for_each(|(x, w)| *x += weight * w);
        }
        x
    }

    fn want<'a>(limit: usize, adjusted: &'a [u32], adjust: &'a (dyn Fn(u32, f32) -> f32 + Sync)) -> Want<'a> {
        Want::Greedy(Greedy { limit, adjusted, adjust })
    }

    #[test]
    fn greedy_token_is_the_argmax_of_the_adjusted_full_row() {
        for (dtype, n, k) in [(GgmlDType::Q8_0, 1001, 64), (GgmlDType::Q6K, 203, 256), (GgmlDType::Q8_0, 500, 96)] {
            let (head, dense) = head(dtype, n, k, 0.0);
            let (Some(shadow), MatMul::Packed(exact)) = (&head.shadow, &head.exact) else { panic!("{dtype:?}: no shadow") };
            let mut decided = 0;
            let cases = 60;
            for case in 0..cases {
                let r = pseudo_random(4, 1000 + case);
                let top = |i: usize| ((r[i] + 1.0) * 0.5 * (n - 2) as f32) as usize;
                // Every 5th case leans on row 10, which ties with row n - 1.
                let lead = if case % 5 == 0 { 10 } else { top(0) };
                let x = peaked(&dense, k, &[lead, top(1), top(2)], case);
                let full = head.logits(&x).unwrap();
                let leader = argmax(&full);
                let pen = [leader, top(3) as u32];
                let boosted = [top(2) as u32];
                let banned = [leader];
                let penalize = |_: u32, l: f32| l - 1.5;
                let boost = |_: u32, l: f32| l + 3.0;
                let ban = |_: u32, l: f32| l - 100.0;
                let none = |_: u32, l: f32| l;
                let wants = [want(n, &[], &none), want(n, &pen, &penalize), want(n, &boosted, &boost), want(n, &banned, &ban), want(n - 1, &[], &none)];
                for w in &wants {
                    let Want::Greedy(g) = w else { unreachable!() };
                    let expected = argmax_adjusted(&mut full.clone(), g);
                    let mut approx = vec![0f32; n];
                    shadow.weight.matmul(&x, &mut approx).unwrap();
                    if let Some(token) = pick(exact, shadow, &x, &mut approx, g) {
                        assert_eq!(token, expected, "{dtype:?} case {case}");
                        decided += 1;
                    }
                    assert_eq!(head.next(&x, std::slice::from_ref(w)).unwrap(), [Next::Token(expected)]);
                }
                if lead == 10 {
                    // Rows 10 and n - 1 tie at the top: the lower id wins.
                    assert_eq!((leader, full[10]), (10, full[n - 1]), "{dtype:?} case {case}");
                }
            }
            // Most peaked rows are decided by the shadow, not by the full-row fallback.
            assert!(decided >= cases * 5 * 3 / 4, "{dtype:?}: the shadow decided {decided} of {}", cases * 5);
        }
    }

    #[test]
    fn rows_asking_logits_and_tokens_share_a_step() {
        let (head, dense) = head(GgmlDType::Q8_0, 1001, 64, 0.0);
        let xs: Vec<f32> = (0..3).flat_map(|i| peaked(&dense, 64, &[100 * i + 5, 7], i as u32)).collect();
        let none = |_: u32, l: f32| l;
        let nexts = head.next(&xs, &[want(1001, &[], &none), Want::Logits, want(1001, &[], &none)]).unwrap();
        for (i, next) in nexts.iter().enumerate() {
            let logits = head.logits(&xs[i * 64..(i + 1) * 64]).unwrap();
            let expected = if i == 1 { Next::Logits(logits) } else { Next::Token(argmax(&logits)) };
            assert_eq!(next, &expected, "row {i}");
        }
    }

    #[test]
    fn a_shadow_that_rarely_decides_is_set_aside() {
        // Rows that differ far less than their 4-bit shadows err: every logit lies within
        // the bounds of the others.
        let (head, _) = head(GgmlDType::Q8_0, 1001, 896, 10.0);
        let none = |_: u32, l: f32| l;
        for step in 0..48 {
            let x = pseudo_random(896, 500 + step);
            let expected = argmax(&head.logits(&x).unwrap());
            assert_eq!(head.next(&x, &[want(1001, &[], &none)]).unwrap(), [Next::Token(expected)]);
        }
        assert!(head.trust.load(Ordering::Relaxed) < TRUST_NEEDED);
    }

    #[test]
    fn many_adjusted_tokens_take_the_full_row() {
        let (head, dense) = head(GgmlDType::Q8_0, 1001, 64, 0.0);
        let (Some(shadow), MatMul::Packed(exact)) = (&head.shadow, &head.exact) else { panic!("no shadow") };
        let x = peaked(&dense, 64, &[3, 9], 2);
        let all: Vec<u32> = (0..1001).collect();
        let lower = |id: u32, l: f32| l - id as f32 / 100.0;
        let g = Greedy { limit: 1001, adjusted: &all, adjust: &lower };
        let mut approx = vec![0f32; 1001];
        shadow.weight.matmul(&x, &mut approx).unwrap();
        assert_eq!(pick(exact, shadow, &x, &mut approx, &g), None);
        let expected = argmax_adjusted(&mut head.logits(&x).unwrap(), &g);
        assert_eq!(head.next(&x, &[Want::Greedy(g)]).unwrap(), [Next::Token(expected)]);
    }

    #[test]
    fn nan_hidden_state_falls_back_to_the_full_row() {
        let (head, dense) = head(GgmlDType::Q8_0, 1001, 64, 0.0);
        let mut x = peaked(&dense, 64, &[3], 1);
        x[5] = f32::NAN;
        let none = |_: u32, l: f32| l;
        let expected = argmax_adjusted(&mut head.logits(&x).unwrap(), &Greedy { limit: 1001, adjusted: &[], adjust: &none });
        assert_eq!(head.next(&x, &[want(1001, &[], &none)]).unwrap(), [Next::Token(expected)]);
    }

    #[test]
    fn heads_of_five_bits_or_fewer_have_no_shadow() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q5_0] {
            let w = QTensor::quantize(&Tensor::from_vec(pseudo_random(64 * 64, 3), (64, 64), &Device::Cpu).unwrap(), dtype).unwrap();
            let exact = MatMul::Packed(PackedWeight::from_qtensor(&w).unwrap().expect("packed"));
            assert!(OutputHead::new(&w, exact, None).unwrap().shadow.is_none(), "{dtype:?}");
        }
    }
}
