//! Continuous batching on one thread: requests wait in a bounded queue, join the running
//! batch between steps, and leave it as soon as they finish or their receiver is dropped.
//!
//! Each iteration of the loop:
//! 1. drops sequences whose client went away (their KV cache is freed with them);
//! 2. admits waiting requests while fewer than `max_batch` run;
//! 3. prefills up to `PREFILL_BUDGET` prompt tokens (oldest first), so a long prompt is
//!    spread over several iterations instead of stalling running streams;
//! 4. runs one batched decode step for every sequence past its prompt.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::model::{self, Model, SeqCache};
use super::prefix::PrefixStore;
use super::prompt::{check_vocabulary, completion_budget, PromptError};
use super::sampling::{self, Sampler};
use super::tokenizer::Tokenizer;
use super::{EngineError, Event, FinishReason, GenerateRequest, ModelInfo, TextEngineConfig, TokenLogprob};
use crate::admission::{Admission, Permit};

/// Prompt tokens prefilled per loop iteration, across all sequences: bounds how long
/// running streams wait for a new prompt (the model splits a call itself, by
/// `model::MAX_PREFILL_ROWS`, which bounds memory instead).
const PREFILL_BUDGET: usize = 256;
/// A prompt's last chunk is not left shorter than this: a few rows run on the slower
/// per-row kernels, and each chunk reads all the weights (SmolLM2: 519 tokens in one
/// chunk 3.5% faster than as 512 + 7).
const MIN_TAIL: usize = 64;

pub(crate) struct EngineShared {
    pub(crate) info: ModelInfo,
    pub(crate) tokenizer: Tokenizer,
    inbox: Arc<Inbox>,
    /// Sequences running and waiting: `max_batch` + `queue_capacity` places.
    admission: Admission,
}

impl Drop for EngineShared {
    /// The last engine handle is gone: let the scheduler thread finish its work and exit.
    fn drop(&mut self) {
        self.inbox.lock().shutdown = true;
        self.inbox.wake.notify_all();
    }
}

/// Requests waiting to join the batch, shared by `submit` and the scheduler thread.
struct Inbox {
    state: Mutex<InboxState>,
    wake: Condvar,
    /// Prompt tokens taken from the prefix cache instead of prefilled, since start.
    reused_prompt_tokens: AtomicU64,
    /// Requests that started from a cached prefix, since start.
    prefix_hits: AtomicU64,
    /// Sequences whose prompt logprobs were computed, since load.
    prompt_logprob_passes: AtomicU64,
    /// The running batch as the loop last left it (see `BatchLoop::publish`).
    running: AtomicUsize,
    kv_bytes: AtomicUsize,
}

struct InboxState {
    waiting: VecDeque<Pending>,
    shutdown: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic elsewhere cannot leave the queue inconsistent: keep going with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Pending {
    req: GenerateRequest,
    /// Whose prefix-cache entries it may reuse.
    scope: u64,
    tx: UnboundedSender<Event>,
    /// Its place, carried into the running batch and freed when the sequence leaves it.
    admitted: Permit,
}

/// Starts the scheduler thread over a loaded model.
pub(crate) fn start(info: ModelInfo, tokenizer: Tokenizer, model: Box<dyn Model>, config: TextEngineConfig) -> Result<Arc<EngineShared>> {
    let config = TextEngineConfig { max_batch: config.max_batch.max(1), ..config };
    let inbox = Arc::new(Inbox {
        state: Mutex::new(InboxState { waiting: VecDeque::new(), shutdown: false }),
        wake: Condvar::new(),
        reused_prompt_tokens: AtomicU64::new(0),
        prefix_hits: AtomicU64::new(0),
        prompt_logprob_passes: AtomicU64::new(0),
        running: AtomicUsize::new(0),
        kv_bytes: AtomicUsize::new(0),
    });
    let batch_loop = BatchLoop {
        model,
        inbox: inbox.clone(),
        max_batch: config.max_batch,
        stop_tokens: info.stop_tokens.clone(),
        vocab_size: info.vocab_size,
        running: Vec::new(),
        prefixes: PrefixStore::default(),
    };
    std::thread::Builder::new().name(format!("hearth-text-{}", info.arch)).spawn(move || batch_loop.run()).context("starting the scheduler thread")?;
    let admission = Admission::new(config.max_batch + config.queue_capacity);
    Ok(Arc::new(EngineShared { info, tokenizer, inbox, admission }))
}

pub(crate) fn reused_prompt_tokens(shared: &EngineShared) -> u64 {
    shared.inbox.reused_prompt_tokens.load(Ordering::Relaxed)
}

/// What the engine is doing now (see `TextEngineStats`).
pub(crate) fn stats(shared: &EngineShared) -> super::TextEngineStats {
    let q = &shared.inbox;
    super::TextEngineStats {
        running: q.running.load(Ordering::Relaxed),
        queued: q.lock().waiting.len(),
        kv_cache_bytes: q.kv_bytes.load(Ordering::Relaxed),
        prefix_hits: q.prefix_hits.load(Ordering::Relaxed),
        reused_prompt_tokens: q.reused_prompt_tokens.load(Ordering::Relaxed),
        prompt_logprob_passes: q.prompt_logprob_passes.load(Ordering::Relaxed),
    }
}

/// Sequences that can be running or waiting at once: a request of more can never be served.
pub(crate) fn capacity(shared: &EngineShared) -> usize {
    shared.admission.capacity()
}

/// Validates and queues a request; answers `Overloaded` at once when every place is taken.
pub(crate) fn submit(shared: &Arc<EngineShared>, req: GenerateRequest, scope: u64) -> Result<UnboundedReceiver<Event>, EngineError> {
    validate(&shared.info, &req)?;
    let admitted = shared.admission.try_admit()?;
    let (tx, rx) = unbounded_channel();
    shared.inbox.lock().waiting.push_back(Pending { req, scope, tx, admitted });
    shared.inbox.wake.notify_one();
    Ok(rx)
}

fn validate(info: &ModelInfo, req: &GenerateRequest) -> Result<(), EngineError> {
    let invalid = |msg: String| Err(EngineError::InvalidRequest(msg));
    if req.prompt.is_empty() {
        return invalid(PromptError::Empty.to_string());
    }
    if let Err(e) = check_vocabulary(req.prompt.iter().copied(), info.vocab_size) {
        return invalid(e.to_string());
    }
    if let Err(e) = check_vocabulary(req.sampling.logit_bias.iter().map(|&(id, _)| id), info.vocab_size) {
        return invalid(format!("logit_bias {e}"));
    }
    // The model's own window (the server checks the catalog's, which is never larger).
    if let Err(e) = completion_budget(info.context_length, req.prompt.len(), Some(req.max_tokens)) {
        return invalid(e.to_string());
    }
    let s = &req.sampling;
    let numbers = [s.temperature, s.top_p, s.presence_penalty, s.frequency_penalty];
    if numbers.iter().chain(s.logit_bias.iter().map(|(_, b)| b)).any(|x| !x.is_finite()) || s.temperature < 0.0 {
        return invalid("sampling parameters must be finite and temperature not negative".into());
    }
    Ok(())
}

/// One request in the running batch.
struct Sequence {
    tx: UnboundedSender<Event>,
    prompt: Vec<u32>,
    /// Prefix-cache scope (see `prefix`).
    scope: u64,
    max_tokens: usize,
    extra_stops: Vec<u32>,
    want_prompt_logprobs: bool,
    logprobs_k: Option<usize>,
    sampler: Sampler,
    cache: SeqCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// Logprobs of prompt tokens gathered so far (when asked for).
    prompt_logprobs: Vec<Option<TokenLogprob>>,
    /// The last sampled token, fed to the next decode step.
    last: Option<u32>,
    generated: usize,
    _admitted: Permit,
}

impl Sequence {
    fn decoding(&self) -> bool {
        self.prefilled == self.prompt.len() && self.last.is_some()
    }
}

/// What happened to a sequence after an event was sent to it.
enum Progress {
    Continue,
    Done,
}

/// The scheduler thread's state: the model and the running batch.
struct BatchLoop {
    model: Box<dyn Model>,
    inbox: Arc<Inbox>,
    max_batch: usize,
    stop_tokens: Vec<u32>,
    vocab_size: usize,
    running: Vec<Sequence>,
    prefixes: PrefixStore,
}

impl BatchLoop {
    fn run(mut self) {
        while let Some(admitted) = self.wait_for_work() {
            for pending in admitted {
                self.admit(pending);
            }
            self.running.retain(|s| !s.tx.is_closed());
            self.prefill_step();
            self.decode_step();
            self.publish();
        }
        tracing::debug!("text scheduler stopped");
    }

    /// Blocks while there is nothing to do; returns requests to admit, None on shutdown.
    fn wait_for_work(&mut self) -> Option<Vec<Pending>> {
        // Sequences whose client left are freed before waiting, so an idle engine holds nothing.
        self.running.retain(|s| !s.tx.is_closed());
        self.publish();
        let mut q = self.inbox.lock();
        while self.running.is_empty() && q.waiting.is_empty() {
            if q.shutdown {
                return None;
            }
            q = self.inbox.wake.wait(q).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.running.retain(|s| !s.tx.is_closed());
        let mut admitted = Vec::new();
        while self.running.len() + admitted.len() < self.max_batch {
            match q.waiting.pop_front() {
                Some(p) if p.tx.is_closed() => continue,
                Some(p) => admitted.push(p),
                None => break,
            }
        }
        Some(admitted)
    }

    /// Makes the running batch's size and KV memory visible to `stats`.
    fn publish(&self) {
        self.inbox.running.store(self.running.len(), Ordering::Relaxed);
        self.inbox.kv_bytes.store(self.running.iter().map(|s| s.cache.bytes()).sum(), Ordering::Relaxed);
    }

    fn admit(&mut self, Pending { req, scope, tx, admitted }: Pending) {
        let capacity = req.prompt.len() + req.max_tokens;
        let mut cache = match self.model.new_cache(capacity) {
            Ok(cache) => cache,
            Err(e) => {
                let _ = tx.send(Event::Error(format!("allocating the KV cache: {e}")));
                return;
            }
        };
        // Prompt logprobs need every prompt row's logits: such a request prefills it all.
        let prefilled = if req.prompt_logprobs { 0 } else { self.prefixes.reuse(scope, &req.prompt, &mut cache) };
        self.inbox.reused_prompt_tokens.fetch_add(prefilled as u64, Ordering::Relaxed);
        if prefilled > 0 {
            self.inbox.prefix_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tokens = prefilled, "prompt prefix reused from the cache");
        }
        self.running.push(Sequence {
            tx,
            max_tokens: req.max_tokens,
            extra_stops: req.stop_tokens,
            want_prompt_logprobs: req.prompt_logprobs,
            logprobs_k: req.logprobs,
            sampler: Sampler::new(req.sampling, req.logprobs).constrained(req.constraint),
            prompt_logprobs: Vec::new(),
            prompt: req.prompt,
            scope,
            cache,
            prefilled,
            last: None,
            generated: 0,
            _admitted: admitted,
        });
    }

    /// Prefills up to `PREFILL_BUDGET` prompt tokens, oldest sequences first.
    fn prefill_step(&mut self) {
        let mut budget = PREFILL_BUDGET;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &mut self.running[i];
            if seq.prefilled == seq.prompt.len() {
                i += 1;
                continue;
            }
            let mut end = (seq.prefilled + budget).min(seq.prompt.len());
            if seq.prompt.len() - end < MIN_TAIL {
                end = seq.prompt.len();
            }
            budget = budget.saturating_sub(end - seq.prefilled);
            match self.prefill_chunk(i, end) {
                Progress::Continue => i += 1,
                Progress::Done => {
                    self.running.remove(i);
                }
            }
        }
    }

    fn prefill_chunk(&mut self, i: usize, end: usize) -> Progress {
        let seq = &mut self.running[i];
        let start = seq.prefilled;
        let chunk = &seq.prompt[start..end];
        let logits = match self.model.prefill(chunk, &mut seq.cache, seq.want_prompt_logprobs).and_then(rows) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = seq.tx.send(Event::Error(format!("prefill failed: {e}")));
                return Progress::Done;
            }
        };
        seq.prefilled = end;
        if seq.want_prompt_logprobs {
            if start == 0 {
                seq.prompt_logprobs.push(None);
            }
            // Row j predicts the prompt token after position start + j.
            for (j, row) in logits.iter().enumerate() {
                if let Some(&next) = seq.prompt.get(start + j + 1) {
                    let k = seq.logprobs_k.unwrap_or(0);
                    seq.prompt_logprobs.push(Some(sampling::token_logprob(row, next, k)));
                }
            }
        }
        if end < seq.prompt.len() {
            return Progress::Continue;
        }
        self.prefixes.insert(seq.scope, &seq.prompt, &mut seq.cache);
        if seq.want_prompt_logprobs {
            self.inbox.prompt_logprob_passes.fetch_add(1, Ordering::Relaxed);
            let all = std::mem::take(&mut seq.prompt_logprobs);
            if seq.tx.send(Event::PromptLogprobs(all)).is_err() {
                return Progress::Done;
            }
        }
        if seq.max_tokens == 0 {
            let _ = seq.tx.send(Event::Finished { reason: FinishReason::Length });
            return Progress::Done;
        }
        let Some(mut last_row) = logits.into_iter().last() else {
            let _ = seq.tx.send(Event::Error("the model returned no logits".into()));
            return Progress::Done;
        };
        self.emit(i, &mut last_row)
    }

    /// One decode step for every sequence past its prompt.
    fn decode_step(&mut self) {
        let batch: Vec<usize> = (0..self.running.len()).filter(|&i| self.running[i].decoding()).collect();
        if batch.is_empty() {
            return;
        }
        let tokens: Vec<u32> = batch.iter().filter_map(|&i| self.running[i].last).collect();
        let vocab_size = self.vocab_size;
        let result = {
            let (mut caches, samplers): (Vec<&mut SeqCache>, Vec<&Sampler>) =
                self.running.iter_mut().filter(|s| s.decoding()).map(|s| (&mut s.cache, &s.sampler)).unzip();
            let adjusted: Vec<Vec<u32>> = samplers.iter().map(|s| if s.greedy_only() { s.adjusted_ids() } else { Vec::new() }).collect();
            let adjust: Vec<_> = samplers.iter().map(|&s| move |id, l| s.adjust_one(id, l)).collect();
            let wants: Vec<model::Want> = samplers
                .iter()
                .zip(&adjusted)
                .zip(&adjust)
                .map(
                    |((s, adjusted), adjust)| {
                        if s.greedy_only() {
                            model::Want::Greedy(model::Greedy { limit: vocab_size, adjusted, adjust })
                        } else {
                            model::Want::Logits
                        }
                    },
                )
                .collect();
            self.model.decode_next(&tokens, &mut caches, &wants)
        };
        let mut finished = Vec::new();
        match result {
            Ok(nexts) if nexts.len() == batch.len() => {
                for (&i, next) in batch.iter().zip(nexts) {
                    let step = match next {
                        model::Next::Token(id) => {
                            self.running[i].sampler.record(id);
                            self.send(i, id, None)
                        }
                        model::Next::Logits(mut row) => self.emit(i, &mut row),
                    };
                    if let Progress::Done = step {
                        finished.push(i);
                    }
                }
            }
            other => {
                let msg = match other {
                    Err(e) => format!("decode failed: {e}"),
                    Ok(rows) => format!("decode returned {} rows for {} sequences", rows.len(), batch.len()),
                };
                for &i in &batch {
                    let _ = self.running[i].tx.send(Event::Error(msg.clone()));
                }
                finished = batch;
            }
        }
        for i in finished.into_iter().rev() {
            self.running.remove(i);
        }
    }

    /// Samples the next token of sequence `i` from `logits` and sends it.
    fn emit(&mut self, i: usize, logits: &mut [f32]) -> Progress {
        let seq = &mut self.running[i];
        let keep = self.vocab_size.min(logits.len());
        let row = &mut logits[..keep];
        let (id, logprob) = seq.sampler.sample(row);
        self.send(i, id, logprob)
    }

    /// Sends sequence `i`'s next token `id` (already recorded by its sampler).
    fn send(&mut self, i: usize, id: u32, logprob: Option<TokenLogprob>) -> Progress {
        let seq = &mut self.running[i];
        if self.stop_tokens.contains(&id) || seq.extra_stops.contains(&id) {
            let _ = seq.tx.send(Event::Finished { reason: FinishReason::Stop });
            return Progress::Done;
        }
        if seq.tx.send(Event::Token { id, logprob }).is_err() {
            return Progress::Done;
        }
        seq.generated += 1;
        seq.last = Some(id);
        if seq.sampler.constraint_complete() {
            let _ = seq.tx.send(Event::Finished { reason: FinishReason::Stop });
            return Progress::Done;
        }
        if seq.generated >= seq.max_tokens {
            let _ = seq.tx.send(Event::Finished { reason: FinishReason::Length });
            return Progress::Done;
        }
        Progress::Continue
    }
}

/// Logits tensor `[n, vocab]` → n rows of f32.
fn rows(logits: Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let logits = logits.to_dtype(DType::F32)?;
    match logits.rank() {
        1 => Ok(vec![logits.to_vec1()?]),
        _ => logits.flatten_to(logits.rank() - 2)?.to_vec2(),
    }
}
