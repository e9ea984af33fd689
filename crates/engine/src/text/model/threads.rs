//! The thread pools a model's steps run in, and how many threads a decode step runs on.
//!
//! A decode step is ~150 short parallel products, each done when its slowest thread is.
//! When another process keeps a core busy, the thread sharing that core holds up every
//! product, and a step on all threads is slower than one on a thread fewer (SmolLM2 at
//! 512 context, 2 cores, one of them busy: 45 tok/s on 2 threads, 69 on 1). Nothing
//! tells a process that a core is taken, so steps are timed: now and then one runs on a
//! neighbouring thread count (at once when steps turn slower than they were), and the
//! count moves there when that step was clearly faster. Prefill needs none of this: its
//! products are long and many, and work stealing already balances them; it runs on all
//! threads. The pools are sized by the pool the model is loaded from (rayon's global
//! pool, `RAYON_NUM_THREADS`, unless loaded inside another).
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Steps on the chosen count between two probes of a neighbouring count.
const PROBE_EVERY: usize = 64;
/// How many recent steps of one shape a probe is compared against (their median).
const RECENT: usize = 4;
/// A probe wins when it took less than this fraction of the recent median.
const WIN: f64 = 0.9;
/// Recent steps this much slower than the best of their shape call a probe at once.
const SLOWER: f64 = 1.3;

/// Runs steps on the thread count that has lately been fastest.
pub struct StepThreads {
    /// `pools[n - 1]` has n threads, built on first use.
    pools: Vec<OnceLock<Option<ThreadPool>>>,
    state: Mutex<State>,
}

impl StepThreads {
    pub fn new() -> Self {
        let max = rayon::current_num_threads();
        Self { pools: (1..=max).map(|_| OnceLock::new()).collect(), state: Mutex::new(State::new(max)) }
    }

    /// Runs `step`, a step of `shape` (steps of one shape cost about the same; a decode
    /// step's shape is its number of sequences).
    pub fn run<T: Send>(&self, shape: usize, step: impl FnOnce() -> T + Send) -> T {
        let plan = self.state.lock().unwrap_or_else(|e| e.into_inner()).plan(shape);
        let start = Instant::now();
        let out = self.on(plan.threads, step);
        let secs = start.elapsed().as_secs_f64();
        self.state.lock().unwrap_or_else(|e| e.into_inner()).record(shape, plan, secs);
        out
    }

    /// Runs `step` on all threads.
    pub fn run_on_all<T: Send>(&self, step: impl FnOnce() -> T + Send) -> T {
        self.on(self.pools.len(), step)
    }

    /// Runs `step` inside a pool of `threads` threads. Inside, each of the step's
    /// parallel products is shared out by the pool's own threads; called from outside,
    /// each would be a round trip through the pool's queue and a sleep and wake of the
    /// caller (SmolLM2 decode ~15% faster inside).
    fn on<T: Send>(&self, threads: usize, step: impl FnOnce() -> T + Send) -> T {
        match self.pool(threads) {
            Some(pool) => pool.install(step),
            None => step(),
        }
    }

    /// The pool of `threads` threads; None if it could not be built (the step then runs
    /// on the caller's pool).
    fn pool(&self, threads: usize) -> Option<&ThreadPool> {
        let slot = self.pools.get(threads - 1)?;
        slot.get_or_init(|| ThreadPoolBuilder::new().num_threads(threads).thread_name(move |i| format!("step{threads}-{i}")).build().ok()).as_ref()
    }
}

impl Default for StepThreads {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy)]
struct Plan {
    threads: usize,
    probe: bool,
}

/// Timings of the recent steps of one shape on the current thread count.
#[derive(Clone)]
struct Shape {
    recent: VecDeque<f64>,
    best: f64,
}

impl Shape {
    /// Median of the recent steps (called with all `RECENT` of them, once per step: no
    /// allocation).
    fn median(&self) -> f64 {
        let mut v = [0.0; RECENT];
        v.iter_mut().zip(&self.recent).for_each(|(v, &t)| *v = t);
        v.sort_by(f64::total_cmp);
        v[RECENT / 2]
    }
}

struct State {
    max: usize,
    threads: usize,
    since_probe: usize,
    /// Probes so far: periodic ones alternate between fewer and more threads.
    probes: usize,
    /// By shape; cleared when the count changes.
    shapes: Vec<Shape>,
}

impl State {
    fn new(max: usize) -> Self {
        Self { max, threads: max, since_probe: 0, probes: 0, shapes: Vec::new() }
    }

    fn plan(&mut self, shape: usize) -> Plan {
        let current = Plan { threads: self.threads, probe: false };
        let Some(s) = self.shapes.get(shape).filter(|s| s.recent.len() == RECENT) else { return current };
        let slower = s.median() > SLOWER * s.best;
        if !slower && self.since_probe < PROBE_EVERY {
            return current;
        }
        let fewer = (self.threads > 1).then(|| self.threads - 1);
        let more = (self.threads < self.max).then(|| self.threads + 1);
        // A slowdown looks like a core taken: try fewer threads first.
        let pick = if slower || self.probes.is_multiple_of(2) { fewer.or(more) } else { more.or(fewer) };
        self.probes += 1;
        match pick {
            Some(threads) => Plan { threads, probe: true },
            None => current,
        }
    }

    fn record(&mut self, shape: usize, plan: Plan, secs: f64) {
        if self.shapes.len() <= shape {
            self.shapes.resize(shape + 1, Shape { recent: VecDeque::new(), best: f64::INFINITY });
        }
        let s = &mut self.shapes[shape];
        if !plan.probe {
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(secs);
            s.best = s.best.min(secs);
            self.since_probe += 1;
            return;
        }
        self.since_probe = 0;
        // (Another caller's step may have changed the count since this one was planned.)
        if s.recent.len() < RECENT {
            return;
        }
        let median = s.median();
        if secs < WIN * median {
            tracing::debug!(from = self.threads, to = plan.threads, probe_ms = secs * 1e3, median_ms = median * 1e3, "decode steps change thread count");
            self.threads = plan.threads;
            self.shapes.clear();
        } else {
            // Slower steps that fewer threads do not help (a longer context, say) are
            // the new normal.
            s.best = median;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `steps` steps of `shape`, each taking `cost(threads)` seconds; returns how
    /// many were probes.
    fn drive(st: &mut State, shape: usize, steps: usize, cost: impl Fn(usize) -> f64) -> usize {
        let mut probes = 0;
        for _ in 0..steps {
            let plan = st.plan(shape);
            probes += plan.probe as usize;
            st.record(shape, plan, cost(plan.threads));
        }
        probes
    }

    /// Two cores; on two threads a step takes 10 ms, on one 14 ms, unless a core is
    /// taken: then 22 ms on two threads.
    fn cost(busy: bool) -> impl Fn(usize) -> f64 {
        move |threads| match (threads, busy) {
            (1, _) => 0.014,
            (_, false) => 0.010,
            (_, true) => 0.022,
        }
    }

    #[test]
    fn stays_on_all_threads_when_they_are_fastest() {
        let mut st = State::new(2);
        let probes = drive(&mut st, 1, 1000, cost(false));
        assert_eq!(st.threads, 2);
        assert!(probes <= 1000 / PROBE_EVERY + 1, "{probes} probes");
    }

    #[test]
    fn moves_to_a_thread_fewer_soon_after_a_core_is_taken_and_back_when_it_is_free() {
        let mut st = State::new(2);
        drive(&mut st, 1, 100, cost(false));
        // Within the steps that fill the recent window, plus the probe.
        drive(&mut st, 1, RECENT + 1, cost(true));
        assert_eq!(st.threads, 1);
        // A probe of two threads while the core is still taken loses.
        drive(&mut st, 1, 3 * PROBE_EVERY, cost(true));
        assert_eq!(st.threads, 1);
        drive(&mut st, 1, PROBE_EVERY + RECENT + 1, cost(false));
        assert_eq!(st.threads, 2);
    }

    #[test]
    fn steps_that_slow_down_for_another_reason_probe_once_and_then_settle() {
        let mut st = State::new(2);
        drive(&mut st, 1, 50, cost(false));
        // A longer context: every step 1.5x slower whatever the thread count.
        let probes = drive(&mut st, 1, 50, |t| 1.5 * cost(false)(t));
        assert_eq!(st.threads, 2);
        assert_eq!(probes, 1);
    }

    #[test]
    fn each_shape_is_compared_with_itself() {
        let mut st = State::new(2);
        // Batches of 1 and of 8 alternate; the batch of 8 costs 3x (not a slowdown).
        let mut probes = 0;
        for i in 0..400 {
            let shape = if i % 2 == 0 { 1 } else { 8 };
            let scale = if shape == 8 { 3.0 } else { 1.0 };
            probes += drive(&mut st, shape, 1, |t| scale * cost(false)(t));
        }
        assert_eq!(st.threads, 2);
        assert!(probes <= 400 / PROBE_EVERY + 1, "{probes} probes");
    }

    #[test]
    fn one_thread_never_probes() {
        let mut st = State::new(1);
        assert_eq!(drive(&mut st, 1, 500, cost(true)), 0);
        assert_eq!(st.threads, 1);
    }

    #[test]
    fn a_step_on_fewer_threads_runs_in_a_pool_of_that_size() {
        let threads = StepThreads::new();
        let max = rayon::current_num_threads();
        for n in 1..=max {
            assert_eq!(threads.on(n, rayon::current_num_threads), n);
        }
        assert_eq!(threads.run_on_all(rayon::current_num_threads), max);
        assert_eq!(threads.run(1, || 7), 7);
    }
}
