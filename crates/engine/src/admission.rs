//! The one bound on how much work a runtime accepts. Every runtime (text,
//! embeddings, moderation, speech) holds an `Admission` sized from the server's
//! configuration (`--max-batch` / `--queue`); a request takes a `Permit` before it
//! queues and keeps it until its work has really ended (finished, failed, or
//! noticed that its client left), so a disconnected client frees its place only
//! once the compute it started has stopped. When no permit is free the request
//! is refused at once with `Overloaded`, which the server answers with 429 and
//! `retry-after`: nothing waits unbounded.
//!
//! A new runtime adopts it with a field `admission: Admission`, one
//! `self.admission.try_admit()?` at the top of its entry point (with
//! `From<Overloaded>` for its error type) and the permit moved into whatever
//! carries the work (a queued job, a blocking closure).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every place is taken: retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the model is at capacity; retry later")]
pub struct Overloaded;

/// A bounded count of admitted requests (running and waiting). Cheap to clone; clones share the count.
#[derive(Debug, Clone)]
pub struct Admission {
    places: Arc<Semaphore>,
    capacity: usize,
}

/// One admitted request's place; dropping it frees the place.
#[derive(Debug)]
#[must_use = "the place is freed as soon as the permit is dropped"]
pub struct Permit {
    _place: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `capacity` requests admitted at once (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { places: Arc::new(Semaphore::new(capacity)), capacity }
    }

    /// Takes a place now, or answers `Overloaded`; never waits. Callable from any thread.
    pub fn try_admit(&self) -> Result<Permit, Overloaded> {
        self.places.clone().try_acquire_owned().map(|place| Permit { _place: place }).map_err(|_| Overloaded)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests holding a place now.
    pub fn admitted(&self) -> usize {
        self.capacity - self.places.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_capacity_and_frees_a_place_when_a_permit_drops() {
        let admission = Admission::new(2);
        let first = admission.try_admit().unwrap();
        let _second = admission.clone().try_admit().unwrap();
        assert_eq!(admission.try_admit().unwrap_err(), Overloaded);
        assert_eq!(admission.admitted(), 2);
        drop(first);
        assert_eq!(admission.admitted(), 1);
        let _third = admission.try_admit().expect("the dropped permit's place is free again");
    }

    #[test]
    fn a_zero_capacity_still_admits_one() {
        let admission = Admission::new(0);
        let _only = admission.try_admit().unwrap();
        assert!(admission.try_admit().is_err());
    }
}
