//! Model runtimes. The engine never sees HTTP: callers submit requests
//! through a handle and receive a stream of events.
pub mod embed;
pub mod text;
pub mod moderate;
