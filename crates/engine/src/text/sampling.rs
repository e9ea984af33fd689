//! Turning one row of logits into the next token, OpenAI style: logit bias, presence and
//! frequency penalties over the tokens generated so far, temperature, nucleus (top_p),
//! a per-request seeded RNG, and logprobs of the adjusted distribution.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::constraint::Constraint;
use super::{SamplingParams, TokenLogprob};

/// Below this temperature sampling is greedy (argmax), hence deterministic.
const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Sampling state of one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// How often each token has been generated (for the penalties).
    counts: HashMap<u32, u32>,
    /// Some(k): report the chosen token's logprob and the k best alternatives.
    logprobs: Option<usize>,
    /// Some: only tokens that continue a valid output may be picked.
    constraint: Option<Constraint>,
}

impl Sampler {
    pub fn new(mut params: SamplingParams, logprobs: Option<usize>) -> Self {
        // By id (stable: equal ids keep their order), for `adjust_one`'s binary search.
        params.logit_bias.sort_by_key(|&(id, _)| id);
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng, counts: HashMap::new(), logprobs, constraint: None }
    }

    /// Restricts the tokens this sampler may pick to those `constraint` allows.
    pub fn constrained(mut self, constraint: Option<Constraint>) -> Self {
        self.constraint = constraint;
        self
    }

    /// Whether the constraint's output is complete: nothing may follow.
    pub fn constraint_complete(&self) -> bool {
        self.constraint.as_ref().is_some_and(Constraint::is_complete)
    }

    /// Picks the next token from `logits` (one row, modified in place) and records it.
    pub fn sample(&mut self, logits: &mut [f32]) -> (u32, Option<TokenLogprob>) {
        if let Some(c) = &mut self.constraint {
            c.mask_logits(logits);
        }
        self.adjust(logits);
        let id = if self.params.temperature <= GREEDY_TEMPERATURE { argmax(logits) } else { self.draw(logits) };
        let logprob = self.logprobs.map(|k| token_logprob(logits, id, k));
        self.record(id);
        (id, logprob)
    }

    /// Whether the next token is the argmax of the adjusted logits and nothing else is
    /// reported of them: the model may then find it without most logits (`Want::Greedy`).
    /// A constrained row needs all its logits: the mask may rule out the model's favourites
    /// (a constraint that waits for a tool call masks nothing yet).
    pub fn greedy_only(&self) -> bool {
        self.params.temperature <= GREEDY_TEMPERATURE && self.logprobs.is_none() && !self.constraint.as_ref().is_some_and(Constraint::is_active)
    }

    /// Records a token picked by the model itself (`Want::Greedy`), and moves the
    /// constraint past it.
    pub fn record(&mut self, id: u32) {
        *self.counts.entry(id).or_insert(0) += 1;
        if let Some(c) = &mut self.constraint {
            c.advance(id);
        }
    }

    /// The ids whose logit [`Self::adjust_one`] changes, ascending.
    pub fn adjusted_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.params.logit_bias.iter().map(|&(id, _)| id).collect();
        if self.penalized() {
            ids.extend(self.counts.keys());
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn penalized(&self) -> bool {
        self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0
    }

    /// One logit adjusted: NaN to -inf, plus its logit bias, then OpenAI's penalties
    /// `logit -= count * frequency + (count > 0) * presence`.
    pub fn adjust_one(&self, id: u32, logit: f32) -> f32 {
        let mut l = if logit.is_nan() { f32::NEG_INFINITY } else { logit };
        let biases = &self.params.logit_bias;
        let first = biases.partition_point(|&(b, _)| b < id);
        for &(_, bias) in biases[first..].iter().take_while(|&&(b, _)| b == id) {
            l += bias;
        }
        if self.penalized() {
            if let Some(&count) = self.counts.get(&id) {
                l -= count as f32 * self.params.frequency_penalty + self.params.presence_penalty;
            }
        }
        l
    }

    /// [`Self::adjust_one`] over a whole row.
    fn adjust(&self, logits: &mut [f32]) {
        for l in logits.iter_mut() {
            // A select rather than a branch: vectorised.
            *l = if l.is_nan() { f32::NEG_INFINITY } else { *l };
        }
        for id in self.adjusted_ids() {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = self.adjust_one(id, *l);
            }
        }
    }

    /// Samples from softmax(logits / temperature) restricted to the top_p nucleus.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let inv_t = 1.0 / self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
        let total: f32 = weights.iter().sum();
        let top_p = self.params.top_p;
        if top_p >= 1.0 || top_p.is_nan() || top_p <= 0.0 {
            return pick(&weights, 0..weights.len(), total, self.rng.random::<f32>());
        }
        // Smallest set of most likely tokens whose mass reaches top_p (at least one token).
        let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
        order.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let mut mass = 0.0;
        let mut keep = 0;
        for &i in &order {
            mass += weights[i] / total;
            keep += 1;
            if mass >= top_p {
                break;
            }
        }
        let kept = &order[..keep.max(1)];
        let kept_total: f32 = kept.iter().map(|&i| weights[i]).sum();
        pick(&weights, kept.iter().copied(), kept_total, self.rng.random::<f32>())
    }
}

/// Inverse-CDF pick over `candidates` given a uniform number in [0, 1).
fn pick(weights: &[f32], candidates: impl Iterator<Item = usize> + Clone, total: f32, uniform: f32) -> u32 {
    let target = uniform * total;
    let mut acc = 0.0;
    let mut last = 0;
    for i in candidates {
        if weights[i] <= 0.0 {
            continue;
        }
        acc += weights[i];
        last = i;
        if acc > target {
            return i as u32;
        }
    }
    // Rounding left the target just past the sum: take the last candidate.
    last as u32
}

/// Index of the largest logit; the lowest id wins ties, NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    // The largest value 8 lanes at a time (vectorised: a vocabulary of 150k in ~70 µs,
    // a third of a scan carrying its best index), then where it first is.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            if l > *m {
                *m = l;
            }
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m });
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// Log-softmax of `logits` at `id`, plus the `k` most likely tokens (most likely first).
pub fn token_logprob(logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let logprob = logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - log_total);
    let top = top_k(logits, k).into_iter().map(|i| (i, logits[i as usize] - log_total)).collect();
    TokenLogprob { logprob, top }
}

/// The `k` largest entries, largest first, lowest id first among equals.
fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: Option<u64>) -> SamplingParams {
        SamplingParams { temperature, seed, ..Default::default() }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(params(0.0, None), None);
        let (id, lp) = s.sample(&mut [0.1, 2.0, 1.0, 2.0]);
        assert_eq!(id, 1);
        assert!(lp.is_none());
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima_anywhere_in_the_row() {
        // 4 chunks of 8 and a tail of 5.
        let mut row = vec![0.0f32; 37];
        row[3] = f32::NAN;
        row[20] = 5.0;
        row[28] = 5.0;
        assert_eq!(argmax(&row), 20);
        row[35] = 6.0;
        assert_eq!(argmax(&row), 35);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn logit_bias_changes_the_winner() {
        let p = SamplingParams { temperature: 0.0, logit_bias: vec![(0, 100.0), (99, 5.0)], ..Default::default() };
        let mut s = Sampler::new(p, None);
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.0]).0, 0);
    }

    #[test]
    fn logit_bias_over_the_whole_vocabulary() {
        // 50k entries, listed in reverse: every token biased, the highest bias at id 7.
        let n = 50_000u32;
        let logit_bias = (0..n).rev().map(|id| (id, if id == 7 { 1.0 } else { -(id as f32) / 1000.0 })).collect();
        let p = SamplingParams { temperature: 0.0, logit_bias, ..Default::default() };
        let mut s = Sampler::new(p, None);
        assert_eq!((s.adjust_one(7, 0.5), s.adjust_one(2000, 0.5)), (1.5, -1.5));
        assert_eq!(s.adjusted_ids().len(), n as usize);
        assert_eq!(s.sample(&mut vec![0.0; n as usize]).0, 7);
    }

    #[test]
    fn penalties_follow_openai_formula() {
        let p = SamplingParams { temperature: 0.0, presence_penalty: 0.5, frequency_penalty: 1.0, ..Default::default() };
        let mut s = Sampler::new(p, Some(3));
        assert_eq!(s.sample(&mut [2.0, 1.9, 0.0]).0, 0);
        // Token 0 once: 2.0 - (1 * 1.0 + 0.5) = 0.5 < 1.9.
        let mut row = [2.0, 1.9, 0.0];
        let (id, lp) = s.sample(&mut row);
        assert_eq!(id, 1);
        assert!((row[0] - 0.5).abs() < 1e-6);
        let lp = lp.expect("logprobs asked for");
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 0, 2]);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, Some(seed)), None);
            (0..40).map(|_| s.sample(&mut logits.clone()).0).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let p = SamplingParams { temperature: 1.0, top_p: 1e-6, seed: Some(1), ..Default::default() };
        let mut s = Sampler::new(p, None);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 0.9]).0, 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75]
        let mut s = Sampler::new(params(1.0, Some(42)), None);
        let n = 4000;
        let ones = (0..n).filter(|_| s.sample(&mut [0.0, 3f32.ln()]).0 == 1).count();
        let frac = ones as f32 / n as f32;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }

    #[test]
    fn logprobs_are_log_softmax() {
        let lp = token_logprob(&[0.0, 0.0, f32::NEG_INFINITY, 0.0, 0.0], 3, 2);
        assert!((lp.logprob - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(lp.top.len(), 2);
        assert_eq!(lp.top[0].0, 0);
        assert_eq!(lp.top[1].0, 1);
    }

    #[test]
    fn nan_logits_do_not_win() {
        let mut s = Sampler::new(params(0.0, None), None);
        assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN]).0, 1);
    }
}
