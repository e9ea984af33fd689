//! `POST /v1/edits` (the 2023 edit models): request (validated) and response.
use crate::common::{Sampling, Usage};
use crate::schema::{self, Invalid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FIELDS: &[&str] = &["model", "input", "instruction", "n", "temperature", "top_p"];

#[derive(Debug, Clone, PartialEq)]
pub struct EditRequest {
    pub model: String,
    /// The text to edit; OpenAI's default is the empty string.
    pub input: String,
    pub instruction: String,
    pub n: usize,
    /// Only `temperature` and `top_p` are part of this contract.
    pub sampling: Sampling,
}

impl EditRequest {
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let obj = schema::object(body)?;
        let model = schema::model(obj)?;
        schema::reject_unknown(obj, FIELDS)?;
        let instruction = match obj.get("instruction") {
            None => return Err(Invalid::required("instruction", None)),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(Invalid::not_of_type("instruction", v, "string")),
        };
        let input = schema::opt_string(obj, "input")?.unwrap_or_default();
        let n = schema::opt_integer(obj, "n", Some(1), Some(20))?.unwrap_or(1) as usize;
        let sampling = Sampling {
            temperature: schema::opt_number(obj, "temperature", Some(0.0), Some(2.0))?.map(|x| x as f32),
            top_p: schema::opt_number(obj, "top_p", Some(0.0), Some(1.0))?.map(|x| x as f32),
            ..Sampling::default()
        };
        Ok(Self { model, input, instruction, n, sampling })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditResponse {
    pub object: String,
    pub created: i64,
    pub choices: Vec<EditChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditChoice {
    pub text: String,
    pub index: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let r = EditRequest::parse(&json!({"model": "m", "instruction": "Fix it"})).unwrap();
        assert_eq!((r.input.as_str(), r.instruction.as_str(), r.n), ("", "Fix it", 1));
        assert_eq!(r.sampling, Sampling::default());
        let r = EditRequest::parse(&json!({"model": "m", "instruction": "x", "input": null, "n": null, "temperature": 0, "top_p": 0.5})).unwrap();
        assert_eq!((r.input.as_str(), r.n, r.sampling.temperature, r.sampling.top_p), ("", 1, Some(0.0), Some(0.5)));
    }

    #[test]
    fn validation_table() {
        let cases: &[(Value, &str, Option<&str>)] = &[
            (json!({"model": "m"}), "'instruction' is a required property", Some("instruction")),
            (json!({"instruction": "x"}), "you must provide a model parameter", None),
            (json!({"model": "m", "instruction": 5}), "5 is not of type 'string' - 'instruction'", Some("instruction")),
            (json!({"model": "m", "instruction": null}), "None is not of type 'string' - 'instruction'", Some("instruction")),
            (json!({"model": "m", "instruction": "x", "input": ["a"]}), "['a'] is not of type 'string' - 'input'", Some("input")),
            (json!({"model": "m", "instruction": "x", "n": 21}), "21 is greater than the maximum of 20 - 'n'", Some("n")),
            (json!({"model": "m", "instruction": "x", "n": 0}), "0 is less than the minimum of 1 - 'n'", Some("n")),
            (json!({"model": "m", "instruction": "x", "temperature": "hot"}), "'hot' is not of type 'number' - 'temperature'", Some("temperature")),
            (json!({"model": "m", "instruction": "x", "top_p": 1.5}), "1.5 is greater than the maximum of 1 - 'top_p'", Some("top_p")),
            (json!({"model": "m", "instruction": "x", "max_tokens": 5}), "Unrecognized request argument supplied: max_tokens", None),
        ];
        for (body, message, param) in cases {
            let e = EditRequest::parse(body).unwrap_err();
            assert_eq!(e.message, *message, "{body}");
            assert_eq!(e.param.as_deref(), *param, "{body}");
        }
    }
}
