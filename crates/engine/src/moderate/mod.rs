//! Moderation: scores text for OpenAI's moderation categories with real
//! models (see MODERATION.md for which model scores which category).
pub mod toxic;
