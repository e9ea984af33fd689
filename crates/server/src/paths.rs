//! The URL path of each endpoint a catalog entry can serve: HTTP's names for the
//! catalog's `Endpoint`s, kept out of the catalog (which knows no HTTP). A leaf
//! module, so `error.rs` can word errors with it without importing the routes.
use hearth_catalog::Endpoint;

/// The path, e.g. "/v1/chat/completions".
pub fn endpoint_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "/v1/chat/completions",
        Endpoint::Completions => "/v1/completions",
        Endpoint::Embeddings => "/v1/embeddings",
        Endpoint::Moderations => "/v1/moderations",
        Endpoint::AudioTranscriptions => "/v1/audio/transcriptions",
        Endpoint::AudioTranslations => "/v1/audio/translations",
        Endpoint::ImagesGenerations => "/v1/images/generations",
        Endpoint::ImagesEdits => "/v1/images/edits",
        Endpoint::ImagesVariations => "/v1/images/variations",
        Endpoint::Edits => "/v1/edits",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        assert_eq!(endpoint_path(Endpoint::ChatCompletions), "/v1/chat/completions");
        assert_eq!(endpoint_path(Endpoint::Completions), "/v1/completions");
        assert_eq!(endpoint_path(Endpoint::Embeddings), "/v1/embeddings");
        assert_eq!(endpoint_path(Endpoint::AudioTranscriptions), "/v1/audio/transcriptions");
        assert_eq!(endpoint_path(Endpoint::ImagesGenerations), "/v1/images/generations");
        assert_eq!(endpoint_path(Endpoint::ImagesEdits), "/v1/images/edits");
        assert_eq!(endpoint_path(Endpoint::ImagesVariations), "/v1/images/variations");
        assert_eq!(endpoint_path(Endpoint::Edits), "/v1/edits");
    }
}
