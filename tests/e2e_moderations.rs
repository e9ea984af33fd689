//! POST /v1/moderations against the real server and the real models (the
//! ported Keras toxicity classifier + heads over all-MiniLM-L6-v2). The
//! sentences here were written for these tests and are not in the training set
//! (scripts/moderation/dataset.tsv).
mod common;
#[path = "common/openapi.rs"]
mod openapi;
use common::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

const MODEL: &str = "hearth-moderation-1";
const CATEGORIES: [&str; 11] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// One server with only the moderation model loaded.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&["--models", MODEL], None))
}

async fn moderate(input: Value) -> Value {
    let body = ok(server(), "/v1/moderations", &json!({"model": "text-moderation-latest", "input": input})).await;
    openapi::assert_matches("CreateModerationResponse", &body);
    body
}

/// The category with the highest score.
fn top(result: &Value) -> String {
    let scores = result["category_scores"].as_object().unwrap();
    CATEGORIES.iter().max_by(|a, b| scores[**a].as_f64().unwrap().total_cmp(&scores[**b].as_f64().unwrap())).unwrap().to_string()
}

fn assert_result_shape(r: &Value) {
    for c in CATEGORIES {
        let underscored = c.replace(['/', '-'], "_");
        for name in [c.to_string(), underscored] {
            assert!(r["categories"][&name].is_boolean(), "categories.{name} missing: {r}");
            let s = r["category_scores"][&name].as_f64().unwrap_or_else(|| panic!("category_scores.{name} missing: {r}"));
            assert!((0.0..=1.0).contains(&s), "{name} score {s}");
        }
        assert_eq!(r["categories"][c], r["categories"][c.replace(['/', '-'], "_")]);
    }
    let any = CATEGORIES.iter().any(|c| r["categories"][*c] == true);
    assert_eq!(r["flagged"], any, "flagged is the OR of the categories: {r}");
}

#[tokio::test]
async fn response_has_openai_shape() {
    let body = moderate(json!("Is the museum open on public holidays?")).await;
    assert!(body["id"].as_str().unwrap().starts_with("modr-"), "{body}");
    assert_eq!(body["model"], MODEL);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_result_shape(&results[0]);
}

#[tokio::test]
async fn harmful_sentences_are_flagged_in_the_right_category() {
    // (sentence, categories that count as the right top category)
    let cases = [
        ("People of that religion are subhuman filth and should all be thrown out of the country.", &["hate", "harassment"][..]),
        ("I am going to bring a rifle to the mall tomorrow and shoot as many people as I can.", &["violence", "harassment/threatening"]),
        ("Take off your clothes, I want to have sex with you right now.", &["sexual"]),
        ("I want to end my life tonight, I have the pills ready.", &["self-harm", "self-harm/intent"]),
        ("You are a worthless, stupid idiot and everyone is sick of you.", &["harassment"]),
    ];
    for (text, want) in cases {
        let body = moderate(json!(text)).await;
        let r = &body["results"][0];
        assert_result_shape(r);
        assert_eq!(r["flagged"], true, "not flagged: {text:?}: {r}");
        assert!(want.contains(&top(r).as_str()), "{text:?}: top category {} not in {want:?}: {r}", top(r));
    }
}

#[tokio::test]
async fn benign_sentences_are_not_flagged() {
    let cases = [
        "The bakery on the corner sells fresh bread every morning.",
        "Could you help me write a cover letter for a job application?",
        "We went hiking in the mountains and saw a beautiful lake.",
        "The quarterly budget meeting has been moved to next Tuesday.",
    ];
    for text in cases {
        let r = &moderate(json!(text)).await["results"][0];
        assert_eq!(r["flagged"], false, "flagged: {text:?}: {r}");
    }
}

#[tokio::test]
async fn list_input_gives_one_result_per_item_in_order() {
    let body = moderate(json!(["What a lovely sunny afternoon for a picnic.", "I will stab you to death when you get home."])).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(results[0]["flagged"], false, "{body}");
    assert_eq!(results[1]["flagged"], true, "{body}");
    // Today's SDKs default to omni-moderation-latest and may send text parts.
    let body = ok(
        server(),
        "/v1/moderations",
        &json!({"model": "omni-moderation-latest", "input": [{"type": "text", "text": "I will stab you to death when you get home."}]}),
    )
    .await;
    assert_eq!(body["results"][0]["flagged"], true, "{body}");
    let body = ok(server(), "/v1/moderations", &json!({"model": "text-moderation-stable", "input": "Nice weather."})).await;
    assert_eq!(body["model"], MODEL);
}

#[tokio::test]
async fn long_input_is_chunked_and_one_violent_sentence_is_found() {
    let benign = "Our town library has a reading club that meets every Wednesday evening. \
                  Members bring tea and biscuits, talk about the chapters they read, and pick the next book together. ";
    let long_benign = benign.repeat(120); // ~4,000 words: far beyond both models' windows
    let r = &moderate(json!(long_benign.clone())).await["results"][0];
    assert_eq!(r["flagged"], false, "the benign text alone: {r}");
    let r = &moderate(json!(format!("{long_benign}I am going to stab my neighbour to death tonight."))).await["results"][0];
    assert_eq!(r["flagged"], true, "{r}");
    assert!(r["categories"]["violence"] == true || r["categories"]["harassment/threatening"] == true, "{r}");
}

#[tokio::test]
async fn bad_input_gets_openai_errors() {
    let table = [
        (json!({"model": "text-moderation-latest"}), 400, Some("input"), "'input' is a required property"),
        (json!({"input": 5}), 400, Some("input"), "5 is not valid under any of the given schemas - 'input'"),
        (json!({"input": ["ok", 1]}), 400, Some("input"), "['ok', 1] is not valid under any of the given schemas - 'input'"),
        (json!({"input": []}), 400, Some("input"), "[] is too short - 'input'"),
        (json!({"input": "x", "model": 3}), 400, Some("model"), "3 is not of type 'string' - 'model'"),
        (json!({"input": "x", "temperature": 1}), 400, None, "Unrecognized request argument supplied: temperature"),
        (json!({"input": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}), 400, Some("input.0"), "Image inputs"),
        (json!({"input": "x", "model": "no-such-model"}), 404, None, "does not exist"),
    ];
    for (body, status, param, message) in table {
        let (got_status, got) = post(server(), "/v1/moderations", &body).await;
        assert_error_shape(&got);
        assert_eq!(got_status, status, "{body}: {got}");
        if status == 400 {
            assert_eq!(got["error"]["param"].as_str(), param, "{body}: {got}");
        }
        assert!(got["error"]["message"].as_str().unwrap().contains(message), "{body}: {got}");
    }
    let resp = client().post(server().url("/v1/moderations")).body("{not json").send().await.unwrap();
    let (status, got) = read_json(resp).await;
    assert_eq!(status, 400, "{got}");
}

#[tokio::test]
async fn inputs_are_not_retained_in_logs() {
    let marker = "zq-retention-marker-7f3a";
    moderate(json!(format!("I will hurt you, {marker}"))).await;
    assert!(!server().log().contains(marker), "the server log holds the input");
}

#[test]
fn the_schema_check_catches_a_wrong_shape() {
    let broken = json!({"id": "modr-x", "model": MODEL, "results": [{"categories": {}, "category_scores": {}}]});
    assert!(std::panic::catch_unwind(|| openapi::assert_matches("CreateModerationResponse", &broken)).is_err());
}
