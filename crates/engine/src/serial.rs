//! The async face shared by the models that run one job at a time on a
//! blocking thread, each job using every core (images, speech): an
//! `Admission` bounds the jobs admitted (one running, the rest waiting; more
//! are refused with `Overloaded`), a semaphore lets one run, and the job's
//! `Cancel` flag is raised when the caller's future is dropped (its client
//! left). The permits travel with the blocking work, so a client that
//! disconnects frees its place only once the work has noticed and stopped.
use crate::admission::{Admission, Overloaded};
use crate::cancel::Cancel;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The work panicked, or the runtime is shutting down.
    #[error("{0}")]
    Lost(String),
}

/// Cheap to clone; clones share the places.
#[derive(Debug, Clone)]
pub struct SerialQueue {
    /// Jobs admitted (running + waiting).
    admission: Admission,
    running: Arc<Semaphore>,
}

impl SerialQueue {
    /// One job running and up to `queue_capacity` waiting.
    pub fn new(queue_capacity: usize) -> Self {
        Self { admission: Admission::new(queue_capacity + 1), running: Arc::new(Semaphore::new(1)) }
    }

    /// Admits the job now or answers `Overloaded`, waits its turn, then runs
    /// `work` on a blocking thread. Dropping the returned future raises the
    /// `Cancel` flag `work` is given.
    pub async fn run<T, F>(&self, work: F) -> Result<T, SerialError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> T + Send + 'static,
    {
        let admitted = self.admission.try_admit()?;
        let running = self.running.clone().acquire_owned().await.map_err(|e| SerialError::Lost(e.to_string()))?;
        let cancel = Cancel::default();
        let _cancel_when_dropped = cancel.on_drop();
        let work = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            work(&cancel)
        });
        work.await.map_err(|e| SerialError::Lost(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_runs_the_queue_is_bounded_and_a_dropped_caller_cancels() {
        let queue = SerialQueue::new(1);
        let (started, is_started) = std::sync::mpsc::channel();
        let first = tokio::spawn({
            let queue = queue.clone();
            async move {
                queue
                    .run(move |cancel| {
                        started.send(()).unwrap();
                        while !cancel.is_cancelled() {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    })
                    .await
            }
        });
        tokio::task::spawn_blocking(move || is_started.recv().unwrap()).await.unwrap();
        // The first runs, a second waits behind it, a third is refused.
        let second = tokio::spawn({
            let queue = queue.clone();
            async move { queue.run(|cancel| cancel.is_cancelled()).await }
        });
        while queue.admission.admitted() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(queue.run(|_| ()).await, Err(SerialError::Overloaded(_))));
        // The first's caller leaves: its work sees the flag and stops, and the second runs, not cancelled.
        first.abort();
        assert!(!second.await.unwrap().unwrap(), "the waiting job runs with its own flag down");
        assert_eq!(queue.run(|_| 7).await.unwrap(), 7);
    }
}
