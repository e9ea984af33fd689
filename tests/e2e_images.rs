//! The image endpoints against the real binary with the tiny stand-in pipeline
//! of tests/fixtures/tiny-sd (random weights in diffusers' layout: pictures are
//! noise, so shapes, sizes, determinism and expiry-free serving are checked, not
//! content). The bad-input corpus holds the refusals; test_images.py the SDK's view.
mod common;

use base64::Engine as _;
use common::{client, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A server whose catalog adds the stand-in as `tiny-sd`, with a state directory of its own.
fn start() -> (Server, tempdir::Dir) {
    let dir = tempdir::Dir::new("hearth-e2e-images");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd");
    let catalog = dir.path.join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[models]]\nid = \"tiny-sd\"\nfamily = \"stable-diffusion\"\nformat = \"diffusers\"\ncontext_window = 77\n\
             endpoints = [\"images_generations\", \"images_edits\", \"images_variations\"]\nsource = {{ kind = \"path\", path = \"{}\" }}\n",
            fixture.display()
        ),
    )
    .unwrap();
    let state = dir.path.join("state");
    let server =
        Server::start_with_env(&["--models", "tiny-sd"], None, &[("HEARTH_CATALOG", catalog.to_str().unwrap()), ("HEARTH_STATE_DIR", state.to_str().unwrap())]);
    (server, dir)
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()))
}

async fn generate(server: &Server, body: Value) -> Value {
    let resp = client().post(server.url("/v1/images/generations")).json(&body).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn b64(item: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(item["b64_json"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn generations_as_b64_json_and_url() {
    let (server, _dir) = start();
    let body = json!({"prompt": "a red cat", "n": 2, "size": "256x256", "response_format": "b64_json", "seed": 11});
    let first = generate(&server, body.clone()).await;
    let data = first["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(first["created"].as_i64().unwrap() > 0);
    let pictures: Vec<Vec<u8>> = data.iter().map(b64).collect();
    assert!(pictures.iter().all(|p| png_size(p) == (256, 256)));
    assert_ne!(pictures[0], pictures[1], "each picture has its own noise");
    let again = generate(&server, body).await;
    assert_eq!(b64(&again["data"][0]), pictures[0], "a fixed seed repeats");

    // `model` omitted and `dall-e-2` both reach the configured model; a url serves the PNG without a key.
    let by_url = generate(&server, json!({"prompt": "a red cat", "model": "dall-e-2", "size": "256x256", "seed": 11})).await;
    let url = by_url["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/v1/images/files/", server.base)), "{url}");
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "image/png");
    let png = fetched.bytes().await.unwrap();
    assert_eq!(png_size(&png), (256, 256));
    assert_eq!(&png[..], &pictures[0][..], "url and b64_json carry the same picture for the same seed");
    assert!(!server.log().contains("panicked"));
}

/// A throwaway directory removed on drop (std only).
mod tempdir {
    use super::*;
    pub struct Dir {
        pub path: PathBuf,
    }
    impl Dir {
        pub fn new(prefix: &str) -> Self {
            let path = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand_suffix()));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
    fn rand_suffix() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    }
}
