//! `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//! `/v1/images/variations` (multipart), and `GET /v1/images/files/{id}.png`,
//! where `url` results are served for an hour. Uploads are checked as OpenAI
//! checks them, in memory only; the work runs behind the model's admission
//! queue (`runtime`).
mod picture;
mod runtime;
mod store;

pub use runtime::ImageRuntime;
pub use store::PictureStore;

use crate::auth::Caller;
use crate::error::{ApiError, INVALID_REQUEST};
use crate::state::{AppState, RuntimeKind};
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use hearth_api::images::{ImageData, ImageRequest, ImageTask, ImagesResponse, ResponseFormat, SIZES};
use hearth_catalog::{Endpoint, IMAGE_DEFAULT};
use hearth_engine::image::ImageJob;
use picture::{EditInput, Upload};
use std::sync::Arc;
use store::unix_now;

/// How far a variation may move from its source (0 keeps it, 1 ignores it): enough
/// to make a new picture that keeps the source's layout and colours.
pub const VARIATION_STRENGTH: f32 = 0.7;
/// Uploads being read at once: each may buffer up to the route's body limit
/// before it is checked, so this bounds that memory; more get a 429.
const UPLOADS_AT_ONCE: usize = 8;
static UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(UPLOADS_AT_ONCE);
/// How often expired `url` pictures are dropped (`get` refuses them at once anyway).
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Set by the handlers for metering: the model that answered.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub model: String,
}

/// What the request brings besides its fields.
enum Input {
    Prompt,
    Edit(EditInput),
    Variation(Upload),
}

pub async fn generations(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = ImageRequest::parse(&crate::body::json(&headers, body)?, ImageTask::Generation)?;
    run(&state, caller, &headers, req, Endpoint::ImagesGenerations, Input::Prompt).await
}

pub async fn edits(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let (req, image, mask) = read_upload(form, ImageTask::Edit).await?;
    let mask = mask.as_deref().map(|m| picture::decode(m, "mask")).transpose()?;
    let edit = EditInput::new(image, mask)?;
    run(&state, caller, &headers, req, Endpoint::ImagesEdits, Input::Edit(edit)).await
}

pub async fn variations(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let (req, image, mask) = read_upload(form, ImageTask::Variation).await?;
    if mask.is_some() {
        return Err(ApiError::invalid("Unrecognized request argument supplied: mask", None));
    }
    run(&state, caller, &headers, req, Endpoint::ImagesVariations, Input::Variation(image)).await
}

/// `GET /v1/images/files/{id}.png`: a `url` result, for an hour. No API key is
/// asked (an `<img>` tag or a plain download must work, as OpenAI's URLs do):
/// the id's 128 random bits are the secret.
pub async fn file(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let found = name.strip_suffix(".png").and_then(|id| state.pictures.get(id, unix_now()));
    match found {
        Some(png) => ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], png).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "No such image: image URLs are valid for 60 minutes after the image was generated.",
            INVALID_REQUEST,
            None,
            None,
        )
        .into_response(),
    }
}

/// Drops expired `url` pictures every few minutes, for the life of the server.
pub fn spawn_purge(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tick.tick().await;
            let purged = state.pictures.purge(unix_now());
            if purged > 0 {
                tracing::debug!("purged {purged} expired image urls");
            }
        }
    });
}

#[derive(Default)]
struct Files {
    image: Option<Vec<u8>>,
    mask: Option<Vec<u8>>,
}

/// Splits the form into the `image` and `mask` files and the text fields.
async fn read_form(form: Result<Multipart, MultipartRejection>) -> Result<(Files, Vec<(String, String)>), ApiError> {
    let _reading = UPLOADS.try_acquire().map_err(|_| ApiError::overloaded())?;
    let mut form = form?;
    let mut files = Files::default();
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" | "image[]" => files.image = Some(field.bytes().await?.to_vec()),
            "mask" => files.mask = Some(field.bytes().await?.to_vec()),
            _ => fields.push((name, field.text().await?)),
        }
    }
    Ok((files, fields))
}

/// An edit's or variation's form: its fields as the request, its required
/// `image` decoded, and its `mask` file as sent (each endpoint has its own rule for it).
async fn read_upload(form: Result<Multipart, MultipartRejection>, task: ImageTask) -> Result<(ImageRequest, Upload, Option<Vec<u8>>), ApiError> {
    let (files, fields) = read_form(form).await?;
    let req = ImageRequest::parse(&ImageRequest::form_object(&fields), task)?;
    let image = files.image.as_deref().ok_or_else(|| ApiError::invalid("'image' is a required property", Some("image")))?;
    Ok((req, picture::decode(image, "image")?, files.mask))
}

async fn run(
    state: &AppState,
    caller: Option<Extension<Caller>>,
    headers: &HeaderMap,
    req: ImageRequest,
    endpoint: Endpoint,
    input: Input,
) -> Result<Response, ApiError> {
    let (model, runtime) = image_model(state, req.model.as_deref(), endpoint)?;
    let size = choose_size(req.size, &runtime.sizes())?;
    let zero_retention = caller.is_some_and(|c| c.zero_retention) || state.platform.as_ref().is_some_and(|p| p.config.zero_retention);
    if req.response_format == ResponseFormat::Url && zero_retention {
        return Err(ApiError::invalid(
            "response_format 'url' is not available with zero data retention: a url keeps the picture on the server for an hour. Use 'b64_json'.",
            Some("response_format"),
        ));
    }
    let (init, mask, strength) = match input {
        Input::Prompt => (None, None, 1.0),
        Input::Edit(edit) => {
            let (init, mask) = edit.at(size);
            (Some(init), Some(mask), 1.0)
        }
        Input::Variation(source) => (Some(source.rgb(size)), None, VARIATION_STRENGTH),
    };
    let job = ImageJob { prompt: req.prompt, n: req.n, size, seed: req.seed.unwrap_or_else(rand::random), steps: None, guidance: None, init, mask, strength };
    let pngs = runtime.generate(job).await?;
    let data = match req.response_format {
        ResponseFormat::B64Json => {
            pngs.into_iter().map(|png| ImageData { url: None, b64_json: Some(base64::engine::general_purpose::STANDARD.encode(png)) }).collect()
        }
        ResponseFormat::Url => {
            let base = base_url(headers);
            pngs.into_iter()
                .map(|png| ImageData { url: Some(format!("{base}/v1/images/files/{}.png", state.pictures.put(png.into(), unix_now()))), b64_json: None })
                .collect()
        }
    };
    let mut response = Json(ImagesResponse { created: unix_now() as i64, data }).into_response();
    response.extensions_mut().insert(ImageUsage { model });
    Ok(response)
}

/// The image model for this request. Without a `model`, OpenAI's default name
/// (`dall-e-2`) when it leads to a loaded image model, else the first loaded one.
fn image_model(state: &AppState, requested: Option<&str>, endpoint: Endpoint) -> Result<(String, ImageRuntime), ApiError> {
    let mut loaded: Vec<(&String, &ImageRuntime)> = state.engines.iter().filter_map(|(id, m)| ImageRuntime::of(m).map(|r| (id, r))).collect();
    loaded.sort_by_key(|(id, _)| *id);
    let Some((first_id, first)) = loaded.first() else { return Err(no_image_model()) };
    match requested {
        None => match state.runtime::<ImageRuntime>(IMAGE_DEFAULT, endpoint) {
            Ok((resolved, runtime)) => Ok((resolved.entry.id.clone(), runtime.clone())),
            Err(_) => Ok(((*first_id).clone(), (*first).clone())),
        },
        Some(name) => {
            let (resolved, runtime) = state.runtime::<ImageRuntime>(name, endpoint)?;
            Ok((resolved.entry.id.clone(), runtime.clone()))
        }
    }
}

/// 400, not 404: the request is well formed and names nothing missing; this
/// server is set up without the kind of model the endpoint needs, which the
/// client cannot fix by another model name and should not retry.
fn no_image_model() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "No image model is configured on this server. The image endpoints need a model of format \"diffusers\" (a local directory of weights) in the catalog.",
        INVALID_REQUEST,
        Some("model"),
        Some("image_model_not_configured"),
    )
}

/// The asked size if the model makes it; without one, the largest the model makes (OpenAI's default is 1024x1024).
fn choose_size(asked: Option<u32>, model_sizes: &[u32]) -> Result<u32, ApiError> {
    let made: Vec<u32> = SIZES.into_iter().filter(|s| model_sizes.contains(s)).collect();
    let names = made.iter().map(|s| format!("'{s}x{s}'")).collect::<Vec<_>>().join(", ");
    match asked {
        Some(side) if made.contains(&side) => Ok(side),
        Some(side) => Err(ApiError::invalid(format!("'{side}x{side}' is not one of [{names}] - 'size'"), Some("size"))),
        None => made.last().copied().ok_or_else(|| ApiError::internal("the image model makes none of the sizes 256x256, 512x512, 1024x1024")),
    }
}

/// Where this server was reached, for absolute `url`s: the request's Host (and a
/// proxy's X-Forwarded-Proto).
fn base_url(headers: &HeaderMap) -> String {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let scheme = value("x-forwarded-proto").filter(|p| *p == "https").unwrap_or("http");
    format!("{scheme}://{}", value(header::HOST.as_str()).unwrap_or("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_the_model_makes() {
        assert_eq!(choose_size(Some(256), &[256, 512]).unwrap(), 256);
        assert_eq!(choose_size(None, &[256, 512]).unwrap(), 512, "the largest the model makes");
        assert_eq!(choose_size(None, &[64, 256, 512, 768, 1024]).unwrap(), 1024);
        let e = choose_size(Some(1024), &[256, 512]).unwrap_err();
        assert_eq!(e.body.error.message, "'1024x1024' is not one of ['256x256', '512x512'] - 'size'");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn urls_point_back_at_this_server() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(base_url(&headers), "http://127.0.0.1:8080");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(base_url(&headers), "https://127.0.0.1:8080");
    }
}
