//! Model runtimes. The engine never sees HTTP: callers submit requests
//! through a handle and receive a stream of events.
pub mod audio;
pub mod embed;
pub mod linalg;
pub mod moderate;
pub mod text;
