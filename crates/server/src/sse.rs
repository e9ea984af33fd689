//! Server-sent event responses: merge the choices' steps, turn them into
//! `data: {json}` frames (endpoint-specific `Chunker`), end with `data: [DONE]`.
//! Dropping the response body (client gone) drops every engine receiver.
use crate::error::ApiError;
use crate::generate::{ChoiceStream, Step};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::stream::{self, StreamExt};
use hearth_api::sse::{done_frame, frame};
use std::collections::VecDeque;
use std::convert::Infallible;

/// Turns steps into SSE frames for one endpoint's chunk shape.
pub trait Chunker: Send + 'static {
    /// Frames sent before any token (e.g. the role chunk of each choice).
    fn start(&mut self) -> Vec<String>;
    fn step(&mut self, index: usize, step: Step) -> Vec<String>;
    /// Frames after every choice finished (the usage chunk), before `[DONE]`.
    fn end(&mut self) -> Vec<String>;
}

struct Streaming<C> {
    chunker: C,
    choices: stream::SelectAll<ChoiceStream>,
    queue: VecDeque<String>,
    ended: bool,
}

pub fn response<C: Chunker>(mut chunker: C, choices: Vec<ChoiceStream>) -> Response {
    let queue: VecDeque<String> = chunker.start().into();
    let state = Streaming { chunker, choices: stream::select_all(choices), queue, ended: false };
    let frames = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(f) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(f), s));
            }
            if s.ended {
                return None;
            }
            match s.choices.next().await {
                Some((_, Step::Failed(message))) => {
                    // OpenAI's error body as one event, then the stream ends (no [DONE]).
                    s.queue.push_back(frame(&ApiError::stream_failure(&message)));
                    s.choices = stream::select_all(Vec::new()); // cancels the other choices
                    s.ended = true;
                }
                Some((index, step)) => s.queue.extend(s.chunker.step(index, step)),
                None => {
                    s.queue.extend(s.chunker.end());
                    s.queue.push_back(done_frame());
                    s.ended = true;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
