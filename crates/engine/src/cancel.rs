//! A flag the async side raises when its client is gone, checked by the
//! blocking work between its steps (audio packets and windows, denoising
//! steps), so the work stops soon after.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

#[derive(Debug, thiserror::Error)]
#[error("the request was cancelled")]
pub struct Cancelled;

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for work that polls a plain `AtomicBool` (the image pipeline).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }

    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Raises the flag when dropped: held by the request's future, which is
    /// dropped when its client disconnects.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
