//! Validates response bodies against OpenAI's published OpenAPI description
//! of June 2023 (`../shared/openapi/openai-2023-06.yaml`): the subset of JSON
//! Schema that file uses ($ref, type, properties, required, items, oneOf,
//! anyOf, allOf, enum, nullable). Extra properties are allowed, as there.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The contract file: beside the repository (CI, main checkout) or one level
/// further up (worktrees), or where `HEARTH_OPENAPI` says.
fn spec_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_OPENAPI") {
        return PathBuf::from(p);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [repo.join("../shared/openapi/openai-2023-06.yaml"), repo.join("../../shared/openapi/openai-2023-06.yaml")];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| panic!("the OpenAPI contract is not at {candidates:?}; set HEARTH_OPENAPI"))
}

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(spec_path()).expect("read the OpenAPI contract");
        serde_yaml::from_str(&text).expect("parse the OpenAPI contract")
    })
}

/// Panics with every violation when `value` does not match `components.schemas.<name>`.
pub fn assert_matches(name: &str, value: &Value) {
    let schema = &spec()["components"]["schemas"][name];
    assert!(!schema.is_null(), "no schema named {name} in the contract");
    let mut errors = Vec::new();
    check(schema, value, "$", &mut errors);
    assert!(errors.is_empty(), "response does not match {name}:\n{}\nbody: {value}", errors.join("\n"));
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(&spec()["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(schema);
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    for (key, need) in [("oneOf", 1usize), ("anyOf", 1)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let passing = options.iter().filter(|o| errs(o, value, path).is_empty()).count();
            let ok = if key == "oneOf" { passing == need } else { passing >= need };
            if !ok {
                errors.push(format!("{path}: {passing} of the {key} options match"));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(s, value, path, errors);
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{path}: {value} not in {allowed:?}"));
        }
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected {ty}, got {value}"));
            return;
        }
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), value.as_object()) {
        for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !obj.contains_key(req) {
                errors.push(format!("{path}: missing required `{req}`"));
            }
        }
        for (k, s) in props {
            if let Some(v) = obj.get(k) {
                check(s, v, &format!("{path}.{k}"), errors);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

fn errs(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut e = Vec::new();
    check(schema, value, path, &mut e);
    e
}
