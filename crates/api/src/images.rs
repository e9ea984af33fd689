//! `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//! `/v1/images/variations` (multipart): the request fields and the response.
//! The multipart forms' text fields are read into a JSON object first, so
//! both kinds of request are checked by the same rules and messages.
use crate::schema::{self, Invalid};
use serde::Serialize;
use serde_json::{Map, Value};

/// The sides (pixels) of the square sizes the 2023 API knows.
pub const SIZES: [u32; 3] = [256, 512, 1024];
const SIZE_NAMES: &str = "['256x256', '512x512', '1024x1024']";
/// DALL·E 2's prompt limit, in characters.
pub const MAX_PROMPT_CHARS: usize = 1000;
pub const MAX_N: i64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Url,
    B64Json,
}

/// Which endpoint a request came to: what it requires differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTask {
    Generation,
    Edit,
    Variation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    /// None: the server's image model (OpenAI's default, `dall-e-2`).
    pub model: Option<String>,
    /// Variations have none.
    pub prompt: String,
    pub n: usize,
    /// Side of the square picture; None: the largest the model makes, up to OpenAI's default 1024.
    pub size: Option<u32>,
    pub response_format: ResponseFormat,
    pub user: Option<String>,
    /// A hearth extension: the same seed and request give the same pictures.
    pub seed: Option<u64>,
}

impl ImageRequest {
    pub fn parse(body: &Value, task: ImageTask) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        let mut allowed = vec!["model", "n", "size", "response_format", "user", "seed"];
        if task != ImageTask::Variation {
            allowed.push("prompt");
        }
        schema::reject_unknown(obj, &allowed)?;
        let prompt = match task {
            ImageTask::Variation => String::new(),
            _ => {
                let prompt = schema::opt_string(obj, "prompt")?.ok_or_else(|| Invalid::required("prompt", None))?;
                if prompt.chars().count() > MAX_PROMPT_CHARS {
                    return Err(Invalid::new(format!("This model's maximum prompt length is {MAX_PROMPT_CHARS} characters."), Some("prompt")));
                }
                prompt
            }
        };
        let model = schema::opt_string(obj, "model")?.filter(|m| !m.is_empty());
        let n = schema::opt_integer(obj, "n", Some(1), Some(MAX_N))?.unwrap_or(1) as usize;
        let size = match schema::opt_string(obj, "size")? {
            None => None,
            Some(s) => Some(parse_size(&s).ok_or_else(|| Invalid::new(format!("'{s}' is not one of {SIZE_NAMES} - 'size'"), Some("size")))?),
        };
        let response_format = match schema::opt_string(obj, "response_format")?.as_deref() {
            None | Some("url") => ResponseFormat::Url,
            Some("b64_json") => ResponseFormat::B64Json,
            Some(other) => {
                return Err(Invalid::new(format!("'{other}' is not one of ['url', 'b64_json'] - 'response_format'"), Some("response_format")));
            }
        };
        let user = schema::opt_string(obj, "user")?;
        let seed = schema::opt_integer(obj, "seed", Some(0), None)?.map(|s| s as u64);
        Ok(Self { model, prompt, n, size, response_format, user, seed })
    }

    /// A multipart form's text fields as the JSON object `parse` reads: numbers
    /// where the field holds one (`n`, `seed`), strings otherwise; the last of
    /// a repeated name wins.
    pub fn form_object(fields: &[(String, String)]) -> Value {
        let mut obj = Map::new();
        for (name, value) in fields {
            let numeric = matches!(name.as_str(), "n" | "seed");
            let parsed = match value.trim().parse::<i64>() {
                Ok(i) if numeric => Value::from(i),
                _ => Value::String(value.clone()),
            };
            obj.insert(name.clone(), parsed);
        }
        Value::Object(obj)
    }
}

/// "512x512" -> 512, for the sizes the API knows.
fn parse_size(s: &str) -> Option<u32> {
    SIZES.into_iter().find(|side| s == format!("{side}x{side}"))
}

#[derive(Debug, Clone, Serialize)]
pub struct ImagesResponse {
    pub created: i64,
    pub data: Vec<ImageData>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value, task: ImageTask) -> String {
        ImageRequest::parse(&body, task).unwrap_err().message
    }

    #[test]
    fn defaults_and_fields() {
        let r = ImageRequest::parse(&json!({"prompt": "an otter"}), ImageTask::Generation).unwrap();
        assert_eq!((r.n, r.size, r.response_format, r.model, r.seed), (1, None, ResponseFormat::Url, None, None));
        let r = ImageRequest::parse(
            &json!({"prompt": "x", "n": 3, "size": "256x256", "response_format": "b64_json", "seed": 7, "model": "dall-e-2"}),
            ImageTask::Edit,
        )
        .unwrap();
        assert_eq!((r.n, r.size, r.response_format, r.seed, r.model.as_deref()), (3, Some(256), ResponseFormat::B64Json, Some(7), Some("dall-e-2")));
    }

    #[test]
    fn openai_messages() {
        assert_eq!(err(json!({}), ImageTask::Generation), "'prompt' is a required property");
        assert_eq!(err(json!({"prompt": "x".repeat(1001)}), ImageTask::Generation), "This model's maximum prompt length is 1000 characters.");
        assert_eq!(err(json!({"prompt": "x", "n": 11}), ImageTask::Generation), "11 is greater than the maximum of 10 - 'n'");
        assert_eq!(
            err(json!({"prompt": "x", "size": "100x100"}), ImageTask::Generation),
            "'100x100' is not one of ['256x256', '512x512', '1024x1024'] - 'size'"
        );
        assert_eq!(err(json!({"prompt": "x", "response_format": "png"}), ImageTask::Generation), "'png' is not one of ['url', 'b64_json'] - 'response_format'");
        assert_eq!(err(json!({"prompt": "x"}), ImageTask::Variation), "Unrecognized request argument supplied: prompt");
        // 1000 characters (not bytes) is allowed.
        assert!(ImageRequest::parse(&json!({"prompt": "é".repeat(1000)}), ImageTask::Generation).is_ok());
    }

    #[test]
    fn form_fields_become_typed_json() {
        let fields = [("n".to_string(), "2".to_string()), ("prompt".to_string(), "12".to_string()), ("n".to_string(), "two".to_string())];
        assert_eq!(ImageRequest::form_object(&fields), json!({"n": "two", "prompt": "12"}));
        assert_eq!(err(ImageRequest::form_object(&fields), ImageTask::Edit), "'two' is not of type 'integer' - 'n'");
    }
}
