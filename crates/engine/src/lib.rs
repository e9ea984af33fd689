//! Model runtimes. The engine never sees HTTP: callers submit requests
//! through a handle and receive a stream of events. Every runtime bounds the
//! work it accepts with `admission::Admission`.
pub mod admission;
pub(crate) mod attention;
pub mod audio;
pub mod cancel;
pub mod embed;
pub mod image;
pub mod linalg;
pub mod math;
pub mod moderate;
pub mod serial;
pub mod text;
