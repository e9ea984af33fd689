//! Request validation with OpenAI's (jsonschema-style) 400 messages, e.g.
//! `'abc' is not of type 'integer' - 'max_tokens'`, with `param` set to the
//! field's path. Values are quoted the way Python's `repr` prints them.
use serde_json::{Map, Value};

/// A request that breaks the contract: message and the offending parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub message: String,
    pub param: Option<String>,
}

impl Invalid {
    pub fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        Self { message: message.into(), param: param.map(str::to_string) }
    }
    fn at(path: &str, what: String) -> Self {
        Self { message: format!("{what} - '{path}'"), param: Some(path.to_string()) }
    }
    pub fn not_of_type(path: &str, value: &Value, ty: &str) -> Self {
        Self::at(path, format!("{} is not of type '{ty}'", repr(value)))
    }
    pub fn no_schema_matches(path: &str, value: &Value) -> Self {
        Self::at(path, format!("{} is not valid under any of the given schemas", repr(value)))
    }
    pub fn required(name: &str, parent: Option<&str>) -> Self {
        match parent {
            Some(p) => Self::at(p, format!("'{name}' is a required property")),
            None => Self { message: format!("'{name}' is a required property"), param: Some(name.to_string()) },
        }
    }
}

/// Python `repr` of a JSON value (what OpenAI's messages quote).
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => repr_str(s),
        Value::Array(items) => format!("[{}]", items.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!("{{{}}}", map.iter().map(|(k, v)| format!("{}: {}", repr_str(k), repr(v))).collect::<Vec<_>>().join(", ")),
    }
}

fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c)
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The body must be a JSON object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, Invalid> {
    body.as_object().ok_or_else(|| Invalid::new(format!("{} is not of type 'object'", repr(body)), None))
}

/// Fields not in `allowed`: OpenAI's "Unrecognized request argument supplied: x".
pub fn reject_unknown(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Invalid> {
    let unknown: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => Err(Invalid::new(format!("Unrecognized request argument supplied: {one}"), None)),
        many => Err(Invalid::new(format!("Unrecognized request arguments supplied: {}", many.join(", ")), None)),
    }
}

/// `model`: required string, with OpenAI's own message when absent.
pub fn model(obj: &Map<String, Value>) -> Result<String, Invalid> {
    match obj.get("model") {
        None | Some(Value::Null) => Err(Invalid::new("you must provide a model parameter", None)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(Invalid::not_of_type("model", v, "string")),
    }
}

/// A present, non-null field (null counts as absent: the contract marks most fields nullable).
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Invalid::not_of_type(key, v, "boolean")),
    }
}

pub fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Invalid::not_of_type(key, v, "string")),
    }
}

pub fn opt_object<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(Invalid::not_of_type(key, v, "object")),
    }
}

pub fn opt_array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Vec<Value>>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(Invalid::not_of_type(key, v, "array")),
    }
}

fn check_range(path: &str, v: &Value, x: f64, min: Option<f64>, max: Option<f64>) -> Result<(), Invalid> {
    if let Some(min) = min {
        if x < min {
            return Err(Invalid::at(path, format!("{} is less than the minimum of {}", repr(v), num(min))));
        }
    }
    if let Some(max) = max {
        if x > max {
            return Err(Invalid::at(path, format!("{} is greater than the maximum of {}", repr(v), num(max))));
        }
    }
    Ok(())
}

/// Bounds print as integers when they are (`maximum of 2`, not `2.0`).
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

pub fn opt_number(obj: &Map<String, Value>, key: &str, min: Option<f64>, max: Option<f64>) -> Result<Option<f64>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(v @ Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            check_range(key, v, x, min, max)?;
            Ok(Some(x))
        }
        Some(v) => Err(Invalid::not_of_type(key, v, "number")),
    }
}

/// An integer (a float with no fraction, like `5.0`, counts as jsonschema does).
pub fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u.min(i64::MAX as u64) as i64))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64)),
        _ => None,
    }
}

pub fn opt_integer(obj: &Map<String, Value>, key: &str, min: Option<i64>, max: Option<i64>) -> Result<Option<i64>, Invalid> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => {
            let i = as_integer(v).ok_or_else(|| Invalid::not_of_type(key, v, "integer"))?;
            check_range(key, v, i as f64, min.map(|m| m as f64), max.map(|m| m as f64))?;
            Ok(Some(i))
        }
    }
}

/// `stop`: a string or 1..=4 strings.
pub fn stop(obj: &Map<String, Value>) -> Result<Vec<String>, Invalid> {
    match get(obj, "stop") {
        None => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![s.clone()] }),
        Some(v @ Value::Array(items)) => {
            if items.is_empty() {
                return Err(Invalid::at("stop", format!("{} is too short", repr(v))));
            }
            if items.len() > 4 {
                return Err(Invalid::at("stop", format!("{} is too long", repr(v))));
            }
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(|| Invalid::no_schema_matches("stop", v)))
                .filter(|s| !matches!(s, Ok(s) if s.is_empty()))
                .collect()
        }
        Some(v) => Err(Invalid::no_schema_matches("stop", v)),
    }
}

/// `logit_bias`: {"token id": bias in -100..=100}.
pub fn logit_bias(obj: &Map<String, Value>) -> Result<Vec<(u32, f32)>, Invalid> {
    let Some(map) = opt_object(obj, "logit_bias")? else { return Ok(vec![]) };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let id: u32 = key.trim().parse().map_err(|_| {
            Invalid::new(format!("Invalid key in 'logit_bias': {key}. You should only be submitting non-negative integers."), Some("logit_bias"))
        })?;
        let bias = match value {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            v => return Err(Invalid::not_of_type(&format!("logit_bias.{key}"), v, "number")),
        };
        if !(-100.0..=100.0).contains(&bias) {
            return Err(Invalid::new(
                format!("Invalid value for 'logit_bias': {} for token {key}. Expected a value between -100 and 100.", repr(value)),
                Some("logit_bias"),
            ));
        }
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// `stream_options`: only with `stream: true`.
pub fn stream_options(obj: &Map<String, Value>, stream: bool) -> Result<Option<crate::StreamOptions>, Invalid> {
    let Some(opts) = opt_object(obj, "stream_options")? else { return Ok(None) };
    if !stream {
        return Err(Invalid::new("The 'stream_options' parameter is only allowed when 'stream' is enabled.", Some("stream_options")));
    }
    let include_usage = match opts.get("include_usage") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(Invalid::not_of_type("stream_options.include_usage", v, "boolean")),
    };
    Ok(Some(crate::StreamOptions { include_usage }))
}

/// The sampling fields shared by both endpoints.
pub fn sampling(obj: &Map<String, Value>) -> Result<crate::common::Sampling, Invalid> {
    Ok(crate::common::Sampling {
        temperature: opt_number(obj, "temperature", Some(0.0), Some(2.0))?.map(|x| x as f32),
        top_p: opt_number(obj, "top_p", Some(0.0), Some(1.0))?.map(|x| x as f32),
        presence_penalty: opt_number(obj, "presence_penalty", Some(-2.0), Some(2.0))?.map(|x| x as f32),
        frequency_penalty: opt_number(obj, "frequency_penalty", Some(-2.0), Some(2.0))?.map(|x| x as f32),
        logit_bias: logit_bias(obj)?,
        seed: opt_integer(obj, "seed", None, None)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr(&json!("abc")), "'abc'");
        assert_eq!(repr(&json!("it's")), "\"it's\"");
        assert_eq!(repr(&json!([1, "a", null, true])), "[1, 'a', None, True]");
        assert_eq!(repr(&json!({"a": 2.5})), "{'a': 2.5}");
    }

    #[test]
    fn type_and_range_messages() {
        let e = opt_integer(&obj(json!({"max_tokens": "abc"})), "max_tokens", Some(1), None).unwrap_err();
        assert_eq!(e.message, "'abc' is not of type 'integer' - 'max_tokens'");
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = opt_number(&obj(json!({"temperature": 3})), "temperature", Some(0.0), Some(2.0)).unwrap_err();
        assert_eq!(e.message, "3 is greater than the maximum of 2 - 'temperature'");
        let e = opt_number(&obj(json!({"top_p": -0.5})), "top_p", Some(0.0), Some(1.0)).unwrap_err();
        assert_eq!(e.message, "-0.5 is less than the minimum of 0 - 'top_p'");
        assert_eq!(opt_integer(&obj(json!({"n": 2.0})), "n", Some(1), None).unwrap(), Some(2));
        assert!(opt_integer(&obj(json!({"n": 2.5})), "n", Some(1), None).is_err());
        assert_eq!(opt_integer(&obj(json!({"n": null})), "n", Some(1), None).unwrap(), None);
    }

    #[test]
    fn stop_shapes() {
        assert_eq!(stop(&obj(json!({"stop": "\n"}))).unwrap(), vec!["\n"]);
        assert_eq!(stop(&obj(json!({"stop": ["a", "b"]}))).unwrap(), vec!["a", "b"]);
        assert_eq!(stop(&obj(json!({"stop": ["a", "b", "c", "d", "e"]}))).unwrap_err().message, "['a', 'b', 'c', 'd', 'e'] is too long - 'stop'");
        assert_eq!(stop(&obj(json!({"stop": 5}))).unwrap_err().message, "5 is not valid under any of the given schemas - 'stop'");
    }

    #[test]
    fn logit_bias_keys_and_values() {
        assert_eq!(logit_bias(&obj(json!({"logit_bias": {"42": -100}}))).unwrap(), vec![(42, -100.0)]);
        assert_eq!(logit_bias(&obj(json!({"logit_bias": {"x": 1}}))).unwrap_err().param.as_deref(), Some("logit_bias"));
        assert!(logit_bias(&obj(json!({"logit_bias": {"1": 101}}))).is_err());
    }

    #[test]
    fn unknown_fields() {
        let e = reject_unknown(&obj(json!({"model": "m", "foo": 1})), &["model"]).unwrap_err();
        assert_eq!(e.message, "Unrecognized request argument supplied: foo");
    }
}
