//! The batching thread. Requests wait in a bounded queue; each iteration packs
//! inputs into one forward pass of at most `max_batch_tokens` tokens, taking
//! one input from each request in turn (round robin, starting one request
//! further each pass), so a one-line request shares the next pass with a
//! request of thousands of inputs instead of waiting for all of them. A
//! request is answered once all its inputs are done; one whose caller went
//! away is dropped unprocessed.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::Context;
use tokio::sync::oneshot;

use super::bert::Bert;
use super::{EmbedConfig, EmbedError};

pub(super) type Reply = oneshot::Receiver<Result<Vec<Vec<f32>>, EmbedError>>;

/// The submitting side; dropping it lets the thread finish its work and exit.
pub(super) struct Handle {
    queue: Arc<JobQueue>,
    capacity: usize,
}

struct JobQueue {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    waiting: VecDeque<Job>,
    /// Requests submitted and not yet answered (waiting or in the worker's hands).
    open: usize,
    shutdown: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the queue inconsistent: keep going with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Job {
    /// Token ids with [CLS]/[SEP] already around them.
    inputs: Vec<Vec<u32>>,
    vectors: Vec<Vec<f32>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

impl Job {
    fn remaining(&self) -> &[Vec<u32>] {
        &self.inputs[self.vectors.len()..]
    }
}

pub(super) fn start(model: Bert, config: EmbedConfig) -> anyhow::Result<Handle> {
    let queue = Arc::new(JobQueue { state: Mutex::new(State { waiting: VecDeque::new(), open: 0, shutdown: false }), wake: Condvar::new() });
    let worker = Batcher { model, queue: queue.clone(), max_batch_tokens: config.max_batch_tokens.max(1), active: VecDeque::new() };
    std::thread::Builder::new().name("hearth-embed".into()).spawn(move || worker.run()).context("starting the embedding thread")?;
    Ok(Handle { queue, capacity: config.queue_capacity.max(1) })
}

impl Handle {
    pub(super) fn submit(&self, inputs: Vec<Vec<u32>>) -> Result<Reply, EmbedError> {
        let (reply, rx) = oneshot::channel();
        let mut state = self.queue.lock();
        if state.open >= self.capacity {
            return Err(EmbedError::Overloaded);
        }
        state.open += 1;
        let vectors = Vec::with_capacity(inputs.len());
        state.waiting.push_back(Job { inputs, vectors, reply });
        drop(state);
        self.queue.wake.notify_one();
        Ok(rx)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.queue.lock().shutdown = true;
        self.queue.wake.notify_all();
    }
}

struct Batcher {
    model: Bert,
    queue: Arc<JobQueue>,
    max_batch_tokens: usize,
    /// Requests taken off the queue, in round-robin order; any may be part done.
    active: VecDeque<Job>,
}

impl Batcher {
    fn run(mut self) {
        loop {
            {
                let mut state = self.queue.lock();
                while state.waiting.is_empty() && self.active.is_empty() && !state.shutdown {
                    state = self.queue.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if state.shutdown && state.waiting.is_empty() && self.active.is_empty() {
                    return;
                }
                self.active.extend(state.waiting.drain(..));
            }
            let before = self.active.len();
            self.active.retain(|job| !job.reply.is_closed());
            let finished = before - self.active.len() + self.step();
            if finished > 0 {
                self.queue.lock().open -= finished;
            }
        }
    }

    /// One forward pass over the next inputs; returns how many requests it finished.
    fn step(&mut self) -> usize {
        // Which job each input of the batch belongs to, and the inputs themselves.
        let mut owners = Vec::new();
        let mut batch: Vec<&[u32]> = Vec::new();
        let mut taken = vec![0usize; self.active.len()];
        let mut tokens = 0;
        'fill: loop {
            let mut added = false;
            for (j, job) in self.active.iter().enumerate() {
                let Some(seq) = job.remaining().get(taken[j]) else { continue };
                if !batch.is_empty() && tokens + seq.len() > self.max_batch_tokens {
                    break 'fill;
                }
                tokens += seq.len();
                owners.push(j);
                batch.push(seq);
                taken[j] += 1;
                added = true;
            }
            if !added {
                break;
            }
        }
        if batch.is_empty() {
            return 0;
        }
        match self.model.embed(&batch) {
            Ok(vectors) => {
                // A job's inputs were taken in order, so its vectors arrive in order.
                for (j, v) in owners.into_iter().zip(vectors) {
                    self.active[j].vectors.push(v);
                }
            }
            Err(e) => {
                tracing::error!("embedding forward pass failed: {e:#}");
                let mut failed = 0;
                for (j, job) in std::mem::take(&mut self.active).into_iter().enumerate() {
                    if taken[j] > 0 {
                        let _ = job.reply.send(Err(EmbedError::Internal(e.to_string())));
                        failed += 1;
                    } else {
                        self.active.push_back(job);
                    }
                }
                return failed;
            }
        }
        let mut finished = 0;
        for job in std::mem::take(&mut self.active) {
            if job.remaining().is_empty() {
                let _ = job.reply.send(Ok(job.vectors));
                finished += 1;
            } else {
                self.active.push_back(job);
            }
        }
        // The next pass starts with the next request.
        self.active.rotate_left(1.min(self.active.len()));
        finished
    }
}
