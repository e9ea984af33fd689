//! The batching thread. Requests wait in a queue bounded by an `Admission`; each iteration packs
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
use crate::admission::{Admission, Permit};

pub(super) type Reply = oneshot::Receiver<Result<Vec<Vec<f32>>, EmbedError>>;

/// The submitting side; dropping it lets the thread finish its work and exit.
pub(super) struct Handle {
    queue: Arc<JobQueue>,
    admission: Admission,
}

struct JobQueue {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    waiting: VecDeque<Job>,
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
    /// The request's place, freed when the job is answered or dropped.
    _admitted: Permit,
}

impl Job {
    fn remaining(&self) -> &[Vec<u32>] {
        &self.inputs[self.vectors.len()..]
    }
}

pub(super) fn start(model: Bert, config: EmbedConfig) -> anyhow::Result<Handle> {
    let queue = Arc::new(JobQueue { state: Mutex::new(State { waiting: VecDeque::new(), shutdown: false }), wake: Condvar::new() });
    let worker = Batcher { model, queue: queue.clone(), max_batch_tokens: config.max_batch_tokens.max(1), active: VecDeque::new() };
    std::thread::Builder::new().name("hearth-embed".into()).spawn(move || worker.run()).context("starting the embedding thread")?;
    Ok(Handle { queue, admission: Admission::new(config.queue_capacity) })
}

impl Handle {
    pub(super) fn submit(&self, inputs: Vec<Vec<u32>>) -> Result<Reply, EmbedError> {
        let admitted = self.admission.try_admit()?;
        let (reply, rx) = oneshot::channel();
        let vectors = Vec::with_capacity(inputs.len());
        self.queue.lock().waiting.push_back(Job { inputs, vectors, reply, _admitted: admitted });
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
            self.active.retain(|job| !job.reply.is_closed());
            self.step();
        }
    }

    /// One forward pass over the next inputs; answered jobs leave `active` (and free their places).
    fn step(&mut self) {
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
            return;
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
                for (j, job) in std::mem::take(&mut self.active).into_iter().enumerate() {
                    if taken[j] > 0 {
                        let _ = job.reply.send(Err(EmbedError::Internal(e.to_string())));
                    } else {
                        self.active.push_back(job);
                    }
                }
                return;
            }
        }
        for job in std::mem::take(&mut self.active) {
            if job.remaining().is_empty() {
                let _ = job.reply.send(Ok(job.vectors));
            } else {
                self.active.push_back(job);
            }
        }
        // The next pass starts with the next request.
        self.active.rotate_left(1.min(self.active.len()));
    }
}
