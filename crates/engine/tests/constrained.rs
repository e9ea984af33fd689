//! Constrained decoding on the real models: sampled outputs at temperature 1 over many
//! seeds always parse and validate (checked by the independent `jsonschema` crate), for
//! nested schemas, enum/const, `$ref`, any JSON object and tool calls; constrained rows
//! run in a batch beside unconstrained ones; `auto` tool calls are held from the model's
//! own call-open tag on; unsupported keywords are refused by name.
mod model_support;

use model_support::collect;

use std::path::PathBuf;
use std::sync::OnceLock;

use hearth_engine::text::constraint::{ConstraintError, ConstraintSpec, Function, Grammars, CALL_CLOSE, CALL_OPEN};
use hearth_engine::text::{ConstraintFailure, FinishReason, GenerateRequest, Message, Role, SamplingParams, TextEngine, TextEngineConfig};
use serde_json::{json, Value};

fn model(file: &str) -> PathBuf {
    model_support::model_path(file)
}

const SMOL: &str = "smollm2-135m-instruct-q4_1.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn smol() -> &'static TextEngine {
    static ENGINE: OnceLock<TextEngine> = OnceLock::new();
    ENGINE.get_or_init(|| model_support::text_engine(SMOL, TextEngineConfig::default()))
}

fn qwen() -> &'static TextEngine {
    static ENGINE: OnceLock<TextEngine> = OnceLock::new();
    ENGINE.get_or_init(|| model_support::text_engine(QWEN, TextEngineConfig::default()))
}

fn chat_prompt(engine: &TextEngine, user: &str) -> Vec<u32> {
    engine.prepare_chat(&[Message::new(Role::User, user)], &[]).expect("template renders").ids
}

fn request(engine: &TextEngine, user: &str, spec: Option<&ConstraintSpec>, max_tokens: usize, sampling: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        prompt: chat_prompt(engine, user),
        max_tokens,
        sampling,
        stop_tokens: vec![],
        logprobs: None,
        prompt_logprobs: false,
        constraint: spec.map(|s| engine.constraint(s).expect("the spec compiles")),
    }
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() }
}

/// Submits every request at once (they decode as one batch) and waits for all.
fn run_all(engine: &TextEngine, requests: Vec<GenerateRequest>) -> Vec<(String, FinishReason)> {
    let receivers: Vec<_> = requests.into_iter().map(|r| engine.submit(r).expect("accepted")).collect();
    receivers
        .into_iter()
        .map(|rx| {
            let (ids, reason) = collect(rx);
            (engine.decode(&ids).expect("decodes"), reason)
        })
        .collect()
}

/// `seeds` sampled outputs at temperature 1, each of which must be complete and valid.
fn assert_always_valid(engine: &TextEngine, user: &str, schema: &Value, seeds: u64, max_tokens: usize) -> Vec<Value> {
    let spec = ConstraintSpec::JsonSchema(schema.clone());
    let validator = jsonschema::validator_for(schema).expect("the test schema is valid");
    let requests = (0..seeds).map(|seed| request(engine, user, Some(&spec), max_tokens, sampled(seed))).collect();
    run_all(engine, requests)
        .into_iter()
        .map(|(text, reason)| {
            assert_eq!(reason, FinishReason::Stop, "the grammar did not complete in {max_tokens} tokens: {text}");
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{text} does not validate: {errors:?}");
            value
        })
        .collect()
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "member": {"type": "boolean"},
            "role": {"enum": ["admin", "user", "guest"]},
            "version": {"const": 2},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]}
                },
                "required": ["city", "zip"],
                "additionalProperties": false
            },
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}
        },
        "required": ["name", "age", "member", "role", "version", "address", "tags"],
        "additionalProperties": false
    })
}

#[test]
fn sampled_nested_outputs_always_validate_smollm2() {
    let values = assert_always_valid(smol(), "Describe a person as JSON.", &person_schema(), 12, 160);
    // enum and const hold in every sample; the samples are not all the same.
    assert!(values.iter().all(|v| v["version"] == json!(2)));
    assert!(values.iter().any(|v| v != &values[0]), "12 seeds gave one output");
}

#[test]
fn sampled_nested_outputs_always_validate_qwen() {
    assert_always_valid(qwen(), "Describe a person as JSON.", &person_schema(), 4, 160);
}

#[test]
fn refs_and_arrays_of_objects_validate() {
    let schema = json!({
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 10}, "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["sku", "qty"],
                "additionalProperties": false
            }
        },
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 1, "maxItems": 3},
            "total": {"type": "number", "minimum": 0, "maximum": 10000}
        },
        "required": ["items", "total"],
        "additionalProperties": false
    });
    assert_always_valid(smol(), "An order as JSON.", &schema, 8, 200);
}

#[test]
fn any_json_object_parses_as_an_object() {
    let e = smol();
    let requests = (0..6)
        .map(|seed| {
            let sampling = SamplingParams { temperature: 0.7, seed: Some(seed), ..Default::default() };
            request(e, "Give me a JSON object about cats.", Some(&ConstraintSpec::JsonObject), 300, sampling)
        })
        .collect();
    let results = run_all(e, requests);
    let complete: Vec<&String> = results.iter().filter(|(_, r)| *r == FinishReason::Stop).map(|(t, _)| t).collect();
    assert!(!complete.is_empty(), "no object completed in 300 tokens: {results:?}");
    for text in complete {
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert!(value.is_object(), "{text}");
    }
}

#[test]
fn greedy_constrained_output_is_valid_and_deterministic() {
    let e = smol();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let spec = ConstraintSpec::JsonSchema(person_schema());
    let run = || run_all(e, vec![request(e, "Describe a person as JSON.", Some(&spec), 160, greedy.clone())]).remove(0);
    let (a, reason) = run();
    assert_eq!(reason, FinishReason::Stop);
    assert!(jsonschema::is_valid(&person_schema(), &serde_json::from_str(&a).expect("JSON")), "{a}");
    assert_eq!(run().0, a);
}

#[test]
fn constrained_and_free_sequences_share_a_batch() {
    let e = smol();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let free = || request(e, "What is the capital of France?", None, 24, greedy.clone());
    let (solo, _) = run_all(e, vec![free()]).remove(0);
    let spec = ConstraintSpec::JsonSchema(person_schema());
    let mut batch = vec![free()];
    batch.extend((0..3).map(|seed| request(e, "Describe a person as JSON.", Some(&spec), 160, sampled(seed))));
    let results = run_all(e, batch);
    assert_eq!(results[0].0, solo, "the free sequence changed beside constrained ones");
    for (text, reason) in &results[1..] {
        assert_eq!(*reason, FinishReason::Stop);
        assert!(jsonschema::is_valid(&person_schema(), &serde_json::from_str(text).expect("JSON")), "{text}");
    }
}

#[test]
fn max_tokens_cuts_a_structure_with_length() {
    let e = smol();
    let spec = ConstraintSpec::JsonSchema(person_schema());
    let (text, reason) = run_all(e, vec![request(e, "Describe a person as JSON.", Some(&spec), 5, sampled(1))]).remove(0);
    assert_eq!(reason, FinishReason::Length);
    assert!(text.starts_with("{\"name\": \""), "{text}");
}

#[test]
fn tool_calls_name_a_function_and_validate_its_arguments() {
    let weather = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    });
    let time = json!({
        "type": "object",
        "properties": {"timezone": {"type": "string", "maxLength": 30}},
        "required": ["timezone"],
        "additionalProperties": false
    });
    let functions = vec![Function { name: "get_weather".into(), parameters: weather.clone() }, Function { name: "get_time".into(), parameters: time.clone() }];
    for e in [smol(), qwen()] {
        for parallel in [false, true] {
            let spec = ConstraintSpec::ToolCalls { functions: functions.clone(), parallel };
            let requests = (0..4).map(|seed| request(e, "What's the weather in Paris?", Some(&spec), 120, sampled(seed))).collect();
            for (text, reason) in run_all(e, requests) {
                if parallel && reason == FinishReason::Length {
                    // Calls may follow calls: only the complete ones are checked.
                    assert!(text.starts_with(CALL_OPEN), "{text}");
                    continue;
                }
                assert_eq!(reason, FinishReason::Stop, "{text}");
                let blocks: Vec<&str> = text.split('\n').filter(|l| l.starts_with('{')).collect();
                assert_eq!(text, blocks.iter().map(|b| format!("{CALL_OPEN}{b}{CALL_CLOSE}")).collect::<Vec<_>>().join("\n"));
                assert!(parallel || blocks.len() == 1, "{text}");
                for block in blocks {
                    let call: Value = serde_json::from_str(block).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"));
                    let schema = match call["name"].as_str() {
                        Some("get_weather") => &weather,
                        Some("get_time") => &time,
                        other => panic!("unknown function {other:?} in {text}"),
                    };
                    assert!(jsonschema::is_valid(schema, &call["arguments"]), "{text}");
                }
            }
        }
    }
}

#[test]
fn unsupported_keywords_are_refused_by_name() {
    let e = smol();
    let refused = |schema: Value| match e.constraint(&ConstraintSpec::JsonSchema(schema)) {
        Err(ConstraintFailure::Spec(err)) => err,
        other => panic!("accepted: {other:?}"),
    };
    let err = refused(json!({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}));
    assert_eq!(err, ConstraintError::Unsupported(vec!["not".into()]));
    let err = refused(json!({"type": "array", "uniqueItems": true}));
    assert_eq!(err.keyword(), Some("uniqueItems"));
    assert!(matches!(refused(json!({"type": "object", "properties": []})), ConstraintError::Invalid(_)));
    assert!(matches!(refused(json!("string")), ConstraintError::Invalid(_)));
    let err = refused(json!({"$ref": "#/$defs/missing"}));
    assert!(matches!(err, ConstraintError::Invalid(_)), "{err:?}");
}

#[test]
fn every_vocabulary_compiles_and_masks() {
    for file in [SMOL, QWEN, GEMMA] {
        let (info, tokenizer) = hearth_engine::text::load_vocab(&model(file)).expect("vocabulary");
        let grammars = Grammars::new(&tokenizer).expect("compiles");
        let mut c = grammars.compile(&ConstraintSpec::JsonSchema(person_schema())).expect("compiles");
        let allowed = c.allowed();
        // The first token must open the object: every allowed token's text starts with '{'.
        let mut n = 0;
        allowed.iter_set_entries(|id| {
            n += 1;
            let bytes = tokenizer.token_bytes(id as u32).unwrap_or_default();
            assert!(bytes.starts_with(b"{"), "{file}: token {id} {:?} allowed first", String::from_utf8_lossy(bytes));
        });
        assert!(n > 0, "{file}: nothing allowed");
        for &stop in &info.stop_tokens {
            assert!(!allowed.is_allowed(stop), "{file}: stop token {stop} allowed before the object");
        }
    }
}

/// `tool_choice: "auto"`: nothing is masked until the model writes the call-open tag; from
/// there the call is held to the tools. The tag is given here as if the model had written
/// it (the small models rarely open a call on their own): the constraint reads it from its
/// tokens, and the model, sampled at temperature 1, writes the rest after it.
#[test]
fn auto_calls_are_held_once_the_model_opens_one() {
    let weather = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": false
    });
    let functions = vec![Function { name: "get_weather".into(), parameters: weather.clone() }];
    let spec = ConstraintSpec::AutoToolCalls { functions, parallel: false };
    for e in [smol(), qwen()] {
        // Free text: nothing masked, however long.
        let mut free = e.constraint(&spec).expect("compiles");
        assert!(!free.is_active());
        for id in e.encode("Let me check. <tool", false).unwrap() {
            free.advance(id);
        }
        assert!(!free.is_active(), "activated before the whole tag");
        let requests = (0..4)
            .map(|seed| {
                let mut r = request(e, "What's the weather in Paris?", None, 60, sampled(seed));
                let mut c = e.constraint(&spec).expect("compiles");
                let tag = e.encode("Sure.<tool_call>", false).unwrap();
                for &id in &tag {
                    c.advance(id);
                }
                assert!(c.is_active(), "the tag did not switch the constraint on");
                r.prompt.extend(tag);
                r.constraint = Some(c);
                r
            })
            .collect();
        for (text, reason) in run_all(e, requests) {
            assert_eq!(reason, FinishReason::Stop, "{text}");
            let body = text.strip_prefix('\n').and_then(|t| t.strip_suffix(CALL_CLOSE)).unwrap_or_else(|| panic!("not one call: {text:?}"));
            let call: Value = serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"));
            assert_eq!(call["name"], "get_weather", "{text}");
            assert!(jsonschema::is_valid(&weather, &call["arguments"]), "{text}");
        }
    }
}
