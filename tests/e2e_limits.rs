//! Bounded resources under hostile and careless input, against the real
//! binary: audio headers, duration and memory, cancellation of audio work,
//! requests that can never fit, per-request input limits, fair embedding
//! batches, HTTP timeouts and the connection cap, the per-key prefix cache,
//! and OpenAI's error body for extractor rejections. Memory is measured as the
//! server process's peak RSS (VmHWM); nothing here asserts a duration.
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const TINY: &str = "whisper-tiny.en";
const TRANSCRIBE: &str = "/v1/audio/transcriptions";

fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// `ffmpeg -f lavfi -i <source> -t <seconds> <name>` (a Debian package scripts/test.sh installs).
fn synthesize(name: &str, source: &str, seconds: u32) -> Vec<u8> {
    let path = work_dir().join(name);
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", source, "-t", &seconds.to_string()])
        .arg(&path)
        .output()
        .expect("ffmpeg (install the Debian package; scripts/test.sh does)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&path).unwrap()
}

/// `seconds` of English speech (espeak-ng, looped by ffmpeg) as 16 kHz FLAC: audio the
/// model must decode token by token in every window, so its job runs for a long time.
fn speech(name: &str, seconds: u32) -> Vec<u8> {
    let wav = work_dir().join(format!("{name}.wav"));
    let text = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.";
    let spoken = Command::new("espeak-ng").args(["-v", "en-us", "-w"]).arg(&wav).arg(text).output().expect("espeak-ng (scripts/test.sh installs it)");
    assert!(spoken.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&spoken.stderr));
    let path = work_dir().join(name);
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(&wav)
        .args(["-t", &seconds.to_string(), "-ar", "16000", "-ac", "1"])
        .arg(&path)
        .output()
        .expect("ffmpeg (install the Debian package; scripts/test.sh does)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&path).unwrap()
}

/// A 16-bit PCM WAV whose header says `rate` Hz and `channels`, with `data` as samples.
fn wav(rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
    let mut w = b"RIFF".to_vec();
    w.extend((36 + data.len() as u32).to_le_bytes());
    w.extend(b"WAVEfmt ");
    w.extend(16u32.to_le_bytes());
    w.extend(1u16.to_le_bytes());
    w.extend(channels.to_le_bytes());
    w.extend(rate.to_le_bytes());
    w.extend(rate.wrapping_mul(2 * channels as u32).to_le_bytes());
    w.extend((2 * channels).to_le_bytes());
    w.extend(16u16.to_le_bytes());
    w.extend(b"data");
    w.extend((data.len() as u32).to_le_bytes());
    w.extend(data);
    w
}

fn audio_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    // --queue 0: one audio job admitted at a time, so a job outliving its client would show.
    SERVER.get_or_init(|| Server::start(&["--models", TINY, "--queue", "0"], None))
}

fn slow_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(900)).build().unwrap()
}

async fn transcribe(server: &Server, file: Vec<u8>, filename: &str) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(file).file_name(filename.to_string());
    let form = reqwest::multipart::Form::new().text("model", TINY).part("file", part);
    let resp = slow_client().post(server.url(TRANSCRIBE)).multipart(form).send().await.unwrap();
    read_json(resp).await
}

/// Audio tests share one server and measure its peak memory: one at a time.
static AUDIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn impossible_audio_headers_are_400s() {
    let _one = AUDIO.lock().await;
    let server = audio_server();
    let second = vec![0u8; 32_000];
    for (what, file) in [
        ("sample rate 0", wav(0, 1, &second)),
        ("sample rate 1 Hz (600 s declared in 1 KB)", wav(1, 1, &second[..1200])),
        ("sample rate 4 MHz", wav(4_000_000, 1, &second)),
        ("no channels", wav(16_000, 0, &second)),
        ("300 channels", wav(16_000, 300, &second)),
    ] {
        let (status, body) = transcribe(server, file, "x.wav").await;
        assert_error(status, &body, 400, "invalid_request_error", Some("file"), Some("invalid_value"));
        assert!(body["error"]["message"].as_str().unwrap().starts_with("Invalid file format"), "{what}: {body}");
    }
    assert!(!server.log().contains("panicked"), "a header reached a panic:\n{}", server.log());
}

/// The limit README states: audio is decoded, resampled and turned into a
/// spectrogram 30 s at a time, so a job's memory does not grow with the audio's
/// length (before that, one hour of silence took +362 MiB and 7,500 s +444 MiB).
const ONE_HOUR_PEAK_MIB: u64 = 100;
const OVER_LIMIT_PEAK_MIB: u64 = 100;

#[tokio::test]
async fn an_hour_of_silent_flac_is_transcribed_within_its_memory_bound() {
    let _one = AUDIO.lock().await;
    let server = audio_server();
    let flac = synthesize("hour.flac", "anullsrc=r=16000:cl=mono", 3600);
    let (before, _) = server.rss_mib();
    server.reset_peak_rss();
    let (status, body) = transcribe(server, flac, "hour.flac").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], "", "{body}");
    let (_, peak) = server.rss_mib();
    eprintln!("one hour of silent FLAC: RSS {before} MiB before, peak {peak} MiB");
    assert!(peak - before.min(peak) < ONE_HOUR_PEAK_MIB, "one hour of audio: RSS {before} MiB -> peak {peak} MiB");
}

#[tokio::test]
async fn audio_over_the_duration_limit_is_refused_while_decoding() {
    let _one = AUDIO.lock().await;
    let server = audio_server();
    // 2 h 5 min of silence at 8 kHz: ~1 MB of FLAC, 7,500 s once decoded.
    let flac = synthesize("long.flac", "anullsrc=r=8000:cl=mono", 7500);
    let (before, _) = server.rss_mib();
    server.reset_peak_rss();
    let (status, body) = transcribe(server, flac, "long.flac").await;
    assert_error(status, &body, 400, "invalid_request_error", Some("file"), Some("audio_too_long"));
    assert_eq!(body["error"]["message"], "Audio file is too long. Maximum audio length is 7200 seconds.");
    let (_, peak) = server.rss_mib();
    eprintln!("7,500 s of silent FLAC (refused): RSS {before} MiB before, peak {peak} MiB");
    assert!(peak - before.min(peak) < OVER_LIMIT_PEAK_MIB, "over the limit: RSS {before} MiB -> peak {peak} MiB");
}

#[tokio::test]
async fn a_disconnected_client_stops_its_audio_job() {
    let _one = AUDIO.lock().await;
    let server = audio_server();
    // Ten minutes of speech: twenty windows, each decoded token by token (a pure tone
    // is answered as no speech, window after window, and may finish before the hang-up).
    let flac = speech("speech.flac", 600);
    let request = tokio::spawn(transcribe(server, flac, "speech.flac"));
    // Let the upload arrive and the work start, then hang up.
    let mut waited = 0;
    while !server.log().contains("POST /v1/audio/transcriptions") && waited < 50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    request.abort();
    let _ = request.await;
    let stopped = "audio job stopped: its client disconnected";
    for _ in 0..600 {
        if server.log().contains(stopped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(server.log().contains(stopped), "the job ran on after its client left:\n{}", server.log());
    // Its place is free again once it stopped.
    let (status, body) = transcribe(server, synthesize("short.flac", "anullsrc=r=16000:cl=mono", 2), "short.flac").await;
    assert_eq!(status, 200, "{body}");
}

fn small_text_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    // Capacity 2: one running, one waiting.
    SERVER.get_or_init(|| Server::start(&["--models", SMOL, "--max-batch", "1", "--queue", "1"], None))
}

#[tokio::test]
async fn requests_that_can_never_fit_are_400_and_a_full_queue_is_429_with_retry_after() {
    let server = small_text_server();
    let (status, body) = post(server, "/v1/chat/completions", &with(chat(SMOL, "Hi", 1), json!({"n": 3}))).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("n"), None);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("needs 3 sequences") && message.contains("at most 2"), "{message}");
    let (status, body) = post(server, "/v1/completions", &with(completion(SMOL, json!(["a", "b"]), 1), json!({"best_of": 2}))).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("n"), None);
    assert!(body["error"]["message"].as_str().unwrap().contains("needs 4 sequences"), "{body}");

    // Two long streams fill the model; a third request is told to retry.
    let long = with(chat(SMOL, "Write a long story about a lighthouse keeper.", 400), json!({"stream": true, "temperature": 1.0}));
    let client = client();
    let first = client.post(server.url("/v1/chat/completions")).json(&long).send().await.unwrap();
    let second = client.post(server.url("/v1/chat/completions")).json(&long).send().await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = client.post(server.url("/v1/chat/completions")).json(&chat(SMOL, "Hi", 1)).send().await.unwrap();
    let retry_after = third.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let (status, body) = read_json(third).await;
    assert_error(status, &body, 429, "requests", None, Some("rate_limit_exceeded"));
    assert_eq!(retry_after.as_deref(), Some("1"));
    drop((first, second));
}

fn embed_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&["--models", &format!("{MINILM},hearth-moderation-1")], None))
}

#[tokio::test]
async fn embeddings_over_300k_tokens_get_openais_error() {
    let server = embed_server();
    let lists = vec![vec![2000u32; 200]; 2048];
    let (status, body) = post(server, "/v1/embeddings", &json!({"model": MINILM, "input": lists})).await;
    assert_error(status, &body, 400, "max_tokens_per_request", None, Some("max_tokens_per_request"));
    assert_eq!(body["error"]["message"], "Requested 413696 tokens, max 300000 tokens per request");
}

#[tokio::test]
async fn a_small_embedding_request_is_not_starved_behind_a_huge_one() {
    let server = embed_server();
    let big = json!({"model": MINILM, "input": vec![vec![2000u32; 250]; 300]});
    let huge = tokio::spawn(async move { post(embed_server(), "/v1/embeddings", &big).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = post(server, "/v1/embeddings", &json!({"model": MINILM, "input": "hello"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(!huge.is_finished(), "the small request waited for the whole huge one");
    let (status, body) = huge.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 300);
}

#[tokio::test]
async fn moderation_caps_its_inputs_and_scores_empty_text_without_the_model() {
    let server = embed_server();
    let (status, body) = post(server, "/v1/moderations", &json!({"input": vec!["hi"; 257]})).await;
    assert_error(status, &body, 400, "invalid_request_error", Some("input"), None);
    assert_eq!(body["error"]["message"], "Too many inputs. The max number of inputs is 256.");
    let (status, body) = post(server, "/v1/moderations", &json!({"input": vec![""; 256]})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 256);
    for r in results {
        assert_eq!(r["flagged"], false);
        assert!(r["category_scores"].as_object().unwrap().values().all(|s| s.as_f64() == Some(0.0)), "{r}");
    }
}

fn http_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(&["--models", SMOL, "--header-timeout", "2", "--idle-timeout", "2", "--body-timeout", "2", "--max-connections", "3"], None)
    })
}

/// Reads until the server closes the connection; panics if it is still open after `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("still open after {limit:?}; read so far: {}", String::from_utf8_lossy(&got))
            }
            Err(_) => break, // reset: closed too
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// HTTP limits share one server with a connection cap: one test at a time.
static HTTP: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn slow_headers_slow_bodies_and_idle_connections_are_closed() {
    let _one = HTTP.lock().unwrap_or_else(|e| e.into_inner());
    let server = http_server();
    let connect = || TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    // Headers never finished.
    let mut slow_head = connect();
    slow_head.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A body that stops after 10 of its 100 bytes.
    let mut slow_body = connect();
    slow_body.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":").unwrap();
    // A request answered, then the connection left idle.
    let mut idle = connect();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let limit = Duration::from_secs(30);
    assert_eq!(read_until_closed(&mut slow_head, limit), "", "nothing is answered to unfinished headers");
    let answer = read_until_closed(&mut slow_body, limit);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(read_until_closed(&mut idle, limit).starts_with("HTTP/1.1 200"));
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    // A header timeout far longer than the idle one: closing is the idle timeout's doing.
    static SERVER: OnceLock<Server> = OnceLock::new();
    let server = SERVER.get_or_init(|| Server::start(&["--models", SMOL, "--header-timeout", "600", "--idle-timeout", "1"], None));
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(120));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "the answer kept the connection alive: {answer}");
}

#[test]
fn connections_over_the_cap_wait_until_one_closes() {
    let _one = HTTP.lock().unwrap_or_else(|e| e.into_inner());
    let server = http_server();
    // Three silent connections take every slot.
    let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    fourth.write_all(b"GET /v1/models HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    fourth.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    let early = fourth.read(&mut buf);
    assert!(early.is_err(), "answered while every slot was taken: {early:?}");
    // The silent ones hit the header timeout; the fourth is then served.
    let answer = read_until_closed(&mut fourth, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(silent);
}

#[tokio::test]
async fn undecodable_path_parameters_get_openais_error_body() {
    let server = http_server();
    let (status, body) = get(server, "/v1/models/%FF").await;
    assert_error(status, &body, 404, "invalid_request_error", None, Some("model_not_found"));
    assert_eq!(body["error"]["message"], "The model `%FF` does not exist");
}

#[tokio::test]
async fn one_keys_cached_prompt_prefix_does_not_serve_another_key() {
    static SERVER: OnceLock<Server> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        Server::start_with_env(
            &["--models", SMOL, "--api-key", "sk-key-a-0001", "--api-key", "sk-key-b-0002"],
            Some("sk-key-a-0001"),
            &[("RUST_LOG", "info,hearth_engine=debug")],
        )
    });
    let prompt = "The quick brown fox jumps over the lazy dog near the riverbank. ".repeat(12);
    let send = |key: &'static str| {
        let body = completion(SMOL, json!(prompt.clone()), 1);
        let url = server.url("/v1/completions");
        async move {
            let resp = client().post(url).bearer_auth(key).json(&body).send().await.unwrap();
            let (status, body) = read_json(resp).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let reuses = || server.log().matches("prompt prefix reused from the cache").count();
    send("sk-key-a-0001").await;
    let after_a = reuses();
    send("sk-key-b-0002").await;
    assert_eq!(reuses(), after_a, "key B was served key A's cached prompt");
    send("sk-key-a-0001").await;
    assert_eq!(reuses(), after_a + 1, "key A's own prompt should come from the cache");
}

#[tokio::test]
async fn best_of_candidates_all_echo_the_prompts_logprobs() {
    let server = http_server();
    let base = completion(SMOL, json!("The lighthouse keeper climbed the stairs"), 3);
    let alone = ok(server, "/v1/completions", &with(base.clone(), json!({"echo": true, "logprobs": 2}))).await;
    let ranked = ok(server, "/v1/completions", &with(base, json!({"echo": true, "logprobs": 2, "n": 2, "best_of": 3, "temperature": 1.0}))).await;
    let prompt_part = |choice: &Value| {
        let lp = &choice["logprobs"];
        let n = alone["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
        (
            lp["tokens"].as_array().unwrap()[..n].to_vec(),
            lp["token_logprobs"].as_array().unwrap()[..n].to_vec(),
            lp["top_logprobs"].as_array().unwrap()[..n].to_vec(),
        )
    };
    let expected = prompt_part(&alone["choices"][0]);
    for choice in ranked["choices"].as_array().unwrap() {
        assert_eq!(prompt_part(choice), expected, "every candidate echoes the prompt's logprobs: {ranked}");
    }
}
