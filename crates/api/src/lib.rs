//! Wire types of the OpenAI HTTP API (the 2023 contract plus what today's SDKs
//! send). Pure data, no I/O: this is the only crate that knows JSON field names.
//!
//! Requests are parsed from a `serde_json::Value` by hand-written validators
//! (module `schema`) so that every wrong type, missing field or out-of-range
//! value gives OpenAI's 400 message and `param`, which serde's own errors cannot.
pub mod audio;
pub mod chat;
pub mod common;
pub mod completions;
pub mod edits;
pub mod embeddings;
pub mod error;
pub mod images;
pub mod models;
pub mod moderations;
pub mod schema;
pub mod sse;

pub use common::{StreamOptions, Usage};
pub use error::{ErrorObject, ErrorResponse};
pub use schema::Invalid;
