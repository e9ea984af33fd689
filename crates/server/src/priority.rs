//! Interactive requests first: the inference routes count the requests they
//! are serving (streams until their last byte), and background work (training
//! steps, batch requests) waits while any is in flight. The engines have no
//! priorities of their own; admission is where background work gives way.
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often waiting background work looks again.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Interactive {
    in_flight: AtomicUsize,
}

struct Guard(Arc<AppState>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.interactive.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Interactive {
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// Blocks the calling (non-async) thread until no interactive request is in flight.
    pub fn wait_idle_blocking(&self) {
        while self.busy() {
            std::thread::sleep(POLL);
        }
    }

    pub async fn wait_idle(&self) {
        while self.busy() {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Counts a request as interactive from its arrival to the end of its response body.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    state.interactive.in_flight.fetch_add(1, Ordering::SeqCst);
    let guard = Guard(state);
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
