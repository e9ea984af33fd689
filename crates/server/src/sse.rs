//! Server-sent event responses: merge the choices' events, turn them into
//! `data: {json}` frames (endpoint-specific `Chunker`), end with `data: [DONE]`.
//! Dropping the response body (client gone) drops every engine receiver.
use crate::error::ApiError;
use crate::generate::ChoiceStream;
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::stream::{self, StreamExt};
use hearth_api::sse::{done_frame, frame};
use hearth_engine::text::{PromptToken, TextChunk, TextEvent};
use std::collections::VecDeque;
use std::convert::Infallible;

/// Turns engine events into SSE frames for one endpoint's chunk shape.
pub trait Chunker: Send + 'static {
    /// Frames sent before any token (e.g. the role chunk of each choice).
    fn start(&mut self) -> Vec<String>;
    /// The echoed prompt's tokens (completions).
    fn prompt(&mut self, index: usize, tokens: Vec<PromptToken>) -> Vec<String>;
    /// Text of choice `index`; `chunk.finish` set on its last.
    fn text(&mut self, index: usize, chunk: TextChunk) -> Vec<String>;
    /// Frames after every choice finished (the usage chunk), before `[DONE]`;
    /// `generated`: the completion tokens of every choice.
    fn end(&mut self, generated: usize) -> Vec<String>;
}

struct Streaming<C> {
    chunker: C,
    choices: stream::SelectAll<ChoiceStream>,
    queue: VecDeque<String>,
    generated: usize,
    ended: bool,
}

pub fn response<C: Chunker>(mut chunker: C, choices: Vec<ChoiceStream>) -> Response {
    let queue: VecDeque<String> = chunker.start().into();
    let state = Streaming { chunker, choices: stream::select_all(choices), queue, generated: 0, ended: false };
    let frames = stream::unfold(state, |mut s| async move {
        loop {
            if let Some(f) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(f), s));
            }
            if s.ended {
                return None;
            }
            match s.choices.next().await {
                Some((_, TextEvent::Failed(message))) => {
                    // OpenAI's error body as one event, then the stream ends (no [DONE]).
                    s.queue.push_back(frame(&ApiError::stream_failure(&message)));
                    s.choices = stream::select_all(Vec::new()); // cancels the other choices
                    s.ended = true;
                }
                Some((index, TextEvent::Prompt(tokens))) => s.queue.extend(s.chunker.prompt(index, tokens)),
                Some((index, TextEvent::Text(chunk))) => {
                    s.generated += chunk.generated;
                    s.queue.extend(s.chunker.text(index, chunk));
                }
                None => {
                    s.queue.extend(s.chunker.end(s.generated));
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
