//! Model runtimes. The engine never sees HTTP: callers submit requests
//! through a handle and receive a stream of events.
pub(crate) mod attention;
pub mod audio;
pub mod embed;
pub mod image;
pub mod linalg;
pub mod math;
pub mod moderate;
pub mod text;
