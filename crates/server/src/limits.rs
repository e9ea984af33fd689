//! Size limits of requests, in one place (routes apply them, errors name them).

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// OpenAI's limit on an uploaded audio file.
pub const FILE_LIMIT: usize = 25 * 1024 * 1024;
/// An audio request's body may hold the file plus the other form fields.
pub const AUDIO_BODY_LIMIT: usize = FILE_LIMIT + 1024 * 1024;
/// An image edit's body: an image and a mask (each refused over OpenAI's 4 MB with
/// OpenAI's message, so read a little past it) plus the other form fields.
pub const IMAGE_BODY_LIMIT: usize = 16 * 1024 * 1024;
