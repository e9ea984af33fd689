//! The store's whole suite, run on SQLite (always) and on PostgreSQL (the real
//! server named by HEARTH_TEST_DATABASE_URL, which scripts/test.sh starts; in
//! CI its absence is a failure, not a skip).
use hearth_store::{time_id, FileRecord, FineTunedModel, Job, JobScope, ListOrder, LoggedRequest, NewKey, Store, UsageQuery, UsageRecord};
use std::path::PathBuf;

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-store-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    format!("{}{:x}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend() {
    let dir = scratch_dir();
    let path = dir.join("hearth.db");
    let store = Store::open_sqlite(&path).await.expect("open sqlite");
    exercise(&store).await;
    // Migrations run at every open and are idempotent.
    drop(store);
    let again = Store::open_sqlite(&path).await.expect("reopen sqlite");
    assert_eq!(again.list_keys().await.unwrap().len(), 2, "state survives a reopen");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let Some(url) = std::env::var("HEARTH_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but HEARTH_TEST_DATABASE_URL is not set: the PostgreSQL half of the store suite must run in CI \
             (scripts/test.sh starts a throwaway PostgreSQL server and sets it)"
        );
        eprintln!("HEARTH_TEST_DATABASE_URL not set: PostgreSQL backend not tested (run scripts/test.sh)");
        return;
    };
    // A database of its own, so runs never see each other's rows.
    let admin = Store::open(&url).await.expect("connect to HEARTH_TEST_DATABASE_URL");
    let name = format!("hearth_test_{}", uuid_like());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(admin.pool()).await.expect("create test database");
    let (base, _) = url.rsplit_once('/').expect("URL with a database name");
    let store = Store::open(&format!("{base}/{name}")).await.expect("open test database");
    exercise(&store).await;
    // Migrations are idempotent here too.
    let again = Store::open(&format!("{base}/{name}")).await.expect("reopen");
    assert_eq!(again.list_keys().await.unwrap().len(), 2);
    store.pool().close().await;
    again.pool().close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(admin.pool()).await.expect("drop test database");
}

async fn exercise(store: &Store) {
    files(store).await;
    keys(store).await;
    usage(store).await;
    request_log(store).await;
    rate_windows(store).await;
    jobs(store).await;
}

async fn files(store: &Store) {
    let mut ids = Vec::new();
    for (i, purpose) in ["fine-tune", "batch", "fine-tune", "assistants"].iter().enumerate() {
        let id = FileRecord::new_id();
        ids.push(id.clone());
        store.insert_file(&FileRecord::new(id, purpose, &format!("f{i}.jsonl"), 10 + i as u64, format!("{i:064x}"))).await.unwrap();
        // Ids carry microseconds: distinct instants keep the order strict.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let asc: Vec<String> = store.list_files(None, None, None, 100, ListOrder::Asc).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(asc, ids, "ascending = upload order");
    let desc: Vec<String> = store.list_files(None, None, None, 2, ListOrder::Desc).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(desc, vec![ids[3].clone(), ids[2].clone()]);
    let page2: Vec<String> = store.list_files(None, None, Some(&ids[2]), 2, ListOrder::Desc).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(page2, vec![ids[1].clone(), ids[0].clone()], "the cursor continues where the page ended");
    let after: Vec<String> = store.list_files(None, None, Some(&ids[1]), 10, ListOrder::Asc).await.unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(after, ids[2..].to_vec());
    let tuned = store.list_files(None, Some("fine-tune"), None, 10, ListOrder::Asc).await.unwrap();
    assert_eq!(tuned.iter().map(|f| f.id.clone()).collect::<Vec<_>>(), vec![ids[0].clone(), ids[2].clone()]);
    let got = store.file(&ids[1]).await.unwrap().expect("stored file");
    assert_eq!((got.purpose.as_str(), got.filename.as_str(), got.bytes), ("batch", "f1.jsonl", 11));
    assert_eq!(got.sha256, format!("{:064x}", 1));
    let mut all = store.file_ids().await.unwrap();
    all.sort();
    assert_eq!(all, ids);
    assert!(store.delete_file(&ids[1]).await.unwrap());
    assert!(!store.delete_file(&ids[1]).await.unwrap(), "deleting twice finds nothing");
    assert!(store.file(&ids[1]).await.unwrap().is_none());
    assert!(store.file("file-unknown").await.unwrap().is_none());

    // Owned files: a key lists its own and the unowned ones; None lists every file.
    let mut owned = Vec::new();
    for owner in ["key_a", "key_b"] {
        let id = FileRecord::new_id();
        store.insert_file(&FileRecord::new(id.clone(), "batch", "o.jsonl", 1, format!("{:064x}", 9)).owned_by(Some(owner.into()))).await.unwrap();
        owned.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let got = store.file(&owned[0]).await.unwrap().unwrap();
    assert_eq!(got.owner.as_deref(), Some("key_a"));
    assert!(got.visible_to(Some("key_a")) && got.visible_to(None) && !got.visible_to(Some("key_b")));
    let listed = |key: Option<&'static str>| async move {
        store.list_files(key, None, None, 100, ListOrder::Asc).await.unwrap().into_iter().map(|f| f.id).collect::<Vec<_>>()
    };
    let unowned = vec![ids[0].clone(), ids[2].clone(), ids[3].clone()];
    assert_eq!(listed(Some("key_a")).await, [unowned.clone(), vec![owned[0].clone()]].concat());
    assert_eq!(listed(Some("key_b")).await, [unowned.clone(), vec![owned[1].clone()]].concat());
    assert_eq!(listed(None).await, [unowned, owned].concat());
}

async fn keys(store: &Store) {
    assert!(!store.has_active_keys().await.unwrap());
    let (alice, secret) = store.create_key(&NewKey { name: "alice".into(), rpm: Some(5), tpm: Some(1000), zero_retention: true, admin: false }).await.unwrap();
    let (boss, boss_secret) = store.create_key(&NewKey { name: "boss".into(), admin: true, ..Default::default() }).await.unwrap();
    assert_ne!(secret, boss_secret);
    assert!(secret.starts_with("sk-hearth-") && secret.len() > 60, "{secret}");
    assert!(!alice.redacted.contains(&secret[14..secret.len() - 4]), "the redacted form hides the secret");
    let found = store.key_by_secret(&secret).await.unwrap().expect("key by its secret");
    assert_eq!(found, alice);
    assert_eq!((found.rpm, found.tpm, found.zero_retention, found.admin), (Some(5), Some(1000), true, false));
    assert!(store.key_by_secret(&boss_secret).await.unwrap().unwrap().admin);
    assert!(store.key_by_secret("sk-hearth-wrong").await.unwrap().is_none());
    assert!(store.has_active_keys().await.unwrap());
    assert_eq!(store.revoke_key("alice").await.unwrap(), vec![alice.id.clone()]);
    assert!(store.key_by_secret(&secret).await.unwrap().is_none(), "revoked at once");
    assert!(store.revoke_key(&alice.id).await.unwrap().is_empty(), "already revoked");
    let listed = store.list_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == alice.id && k.revoked_at.is_some()));
    assert!(listed.iter().any(|k| k.id == boss.id && k.revoked_at.is_none()));
}

/// bucket, key, model, endpoint, requests, prompt tokens, completion tokens
type SumRow<'a> = (i64, Option<&'a str>, &'a str, &'a str, i64, i64, i64);

async fn usage(store: &Store) {
    let day = 86_400;
    let start = 1_700_006_400 - 1_700_006_400 % day; // a midnight
    let rec = |key: Option<&str>, model: &str, endpoint: &str, p: i64, c: i64, secs: f64, at: i64| UsageRecord {
        api_key_id: key.map(str::to_string),
        model: model.into(),
        endpoint: endpoint.into(),
        prompt_tokens: p,
        completion_tokens: c,
        audio_seconds: secs,
        created_at: at,
        batch: false,
    };
    for r in [
        rec(Some("key_a"), "m1", "/v1/chat/completions", 10, 5, 0.0, start + 10),
        rec(Some("key_a"), "m1", "/v1/completions", 7, 3, 0.0, start + 20),
        rec(Some("key_b"), "m1", "/v1/chat/completions", 1, 1, 0.0, start + 30),
        rec(Some("key_a"), "m2", "/v1/chat/completions", 4, 2, 0.0, start + day + 5),
        rec(None, "whisper", "/v1/audio/transcriptions", 0, 0, 2.5, start + day + 6),
        rec(Some("key_a"), "m1", "/v1/chat/completions", 100, 100, 0.0, start + 3 * day), // outside the range
    ] {
        store.record_usage(&r).await.unwrap();
    }
    let q = UsageQuery { start, end: start + 2 * day, width: day, endpoints: vec!["/v1/chat/completions".into(), "/v1/completions".into()] };
    let buckets = store.usage(&q).await.unwrap();
    let sums: Vec<SumRow> = buckets
        .iter()
        .map(|b| (b.start, b.api_key_id.as_deref(), b.model.as_str(), b.endpoint.as_str(), b.requests, b.prompt_tokens, b.completion_tokens))
        .collect();
    assert_eq!(
        sums,
        vec![
            (start, Some("key_a"), "m1", "/v1/chat/completions", 1, 10, 5),
            (start, Some("key_a"), "m1", "/v1/completions", 1, 7, 3),
            (start, Some("key_b"), "m1", "/v1/chat/completions", 1, 1, 1),
            (start + day, Some("key_a"), "m2", "/v1/chat/completions", 1, 4, 2),
        ]
    );
    let audio = store.usage(&UsageQuery { endpoints: vec!["/v1/audio/transcriptions".into()], ..q.clone() }).await.unwrap();
    assert_eq!(audio.len(), 1);
    assert_eq!((audio[0].api_key_id.as_deref(), audio[0].audio_seconds, audio[0].requests), (None, 2.5, 1));
    let all = store.usage(&UsageQuery { endpoints: vec![], end: start + 4 * day, ..q.clone() }).await.unwrap();
    assert_eq!(all.iter().map(|b| b.requests).sum::<i64>(), 6);
    assert!(all.iter().all(|b| !b.batch), "requests sent directly");
    // A batch's request is summed apart from the same key's direct ones.
    store.record_usage(&UsageRecord { batch: true, ..rec(Some("key_b"), "m1", "/v1/chat/completions", 2, 2, 0.0, start + 40) }).await.unwrap();
    let split: Vec<(Option<&str>, bool, i64)> = store
        .usage(&q)
        .await
        .unwrap()
        .iter()
        .filter(|b| b.start == start && b.endpoint == "/v1/chat/completions")
        .map(|b| (b.api_key_id.as_deref().map(|k| if k == "key_a" { "a" } else { "b" }), b.batch, b.requests))
        .collect();
    assert_eq!(split, vec![(Some("a"), false, 1), (Some("b"), false, 1), (Some("b"), true, 1)]);
}

async fn request_log(store: &Store) {
    let now = hearth_store::now();
    for (age, text) in [(0, "fresh"), (40 * 86_400, "old")] {
        store
            .log_request(&LoggedRequest {
                api_key_id: Some("key_a".into()),
                endpoint: "/v1/chat/completions".into(),
                model: "m1".into(),
                request: format!("{{\"q\":\"{text}\"}}"),
                response: "{}".into(),
                created_at: now - age,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.logged_requests(10).await.unwrap().len(), 2);
    assert_eq!(store.purge(30 * 86_400).await.unwrap(), 1, "only the entry past 30 days goes");
    let left = store.logged_requests(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].request.contains("fresh"));
}

async fn rate_windows(store: &Store) {
    // Concurrent increments (as from several replicas) are never lost.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.add_to_window("key_r", 600, 1, 7).await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().requests);
    }
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>(), "each increment sees a distinct count");
    let w = store.add_to_window("key_r", 600, 0, 3).await.unwrap();
    assert_eq!((w.requests, w.tokens), (20, 143));
    assert_eq!(store.add_to_window("key_r", 660, 1, 0).await.unwrap().requests, 1, "a new minute starts at zero");
}

async fn jobs(store: &Store) {
    let mut ids = Vec::new();
    for (kind, status) in [("fine_tuning", "running"), ("batch", "in_progress"), ("fine_tuning", "queued"), ("fine_tuning", "succeeded")] {
        let id = time_id("ftjob-");
        store.insert_job(&Job::new(id.clone(), kind, status, format!("{{\"id\":\"{id}\"}}"))).await.unwrap();
        ids.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let all = JobScope::All;
    let listed: Vec<String> = store.list_jobs("fine_tuning", &all, None, 2).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(listed, vec![ids[3].clone(), ids[2].clone()], "newest first, of one kind");
    let next: Vec<String> = store.list_jobs("fine_tuning", &all, Some(&ids[2]), 10).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(next, vec![ids[0].clone()]);
    // Owners: a key lists its own jobs; jobs made without a key are listed to callers without one.
    let mine = time_id("ftjob-");
    store.insert_job(&Job::new(mine.clone(), "fine_tuning", "queued", "{}".into()).owned_by(Some("key_a".into()))).await.unwrap();
    assert_eq!(store.job(&mine).await.unwrap().unwrap().owner.as_deref(), Some("key_a"));
    let of = |owner: Option<&str>| JobScope::OwnedBy(owner.map(str::to_string));
    let ids_of = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids_of(store.list_jobs("fine_tuning", &of(Some("key_a")), None, 10).await.unwrap()), vec![mine.clone()]);
    assert!(store.list_jobs("fine_tuning", &of(Some("key_b")), None, 10).await.unwrap().is_empty(), "another key sees none");
    assert_eq!(ids_of(store.list_jobs("fine_tuning", &of(None), None, 10).await.unwrap()), vec![ids[3].clone(), ids[2].clone(), ids[0].clone()]);
    assert_eq!(store.list_jobs("fine_tuning", &all, None, 10).await.unwrap().len(), 4, "admins see every job");
    let pending_before: Vec<String> = store.jobs_in("fine_tuning", &["queued", "running"]).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(pending_before, vec![ids[0].clone(), ids[2].clone(), mine.clone()], "the runner takes up every owner's jobs");
    store.update_job(&mine, "cancelled", "{}").await.unwrap();
    let pending: Vec<String> = store.jobs_in("fine_tuning", &["queued", "running"]).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(pending, vec![ids[0].clone(), ids[2].clone()], "what a restart resumes, oldest first");
    assert!(store.update_job(&ids[0], "failed", "{\"status\":\"failed\"}").await.unwrap());
    let failed = store.job(&ids[0]).await.unwrap().unwrap();
    assert_eq!((failed.status.as_str(), failed.body.as_str()), ("failed", "{\"status\":\"failed\"}"));
    assert!(!store.update_job("ftjob-none", "failed", "{}").await.unwrap());
    assert!(!store.update_job_if(&ids[0], "running", "succeeded", "{}").await.unwrap(), "a status changed meanwhile is kept");
    assert!(store.update_job_if(&ids[0], "failed", "cancelled", "{}").await.unwrap());
    assert_eq!(store.job(&ids[0]).await.unwrap().unwrap().status, "cancelled");

    let mut events = Vec::new();
    for i in 0..3 {
        events.push(store.add_event(&ids[2], "info", &format!("step {i}"), Some("{\"step\":1}")).await.unwrap().id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    store.add_event(&ids[3], "info", "other job", None).await.unwrap();
    let newest: Vec<String> = store.events(&ids[2], None, 2).await.unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(newest, vec!["step 2", "step 1"]);
    let older = store.events(&ids[2], Some(&events[1]), 10).await.unwrap();
    assert_eq!((older.len(), older[0].message.as_str(), older[0].data.as_deref()), (1, "step 0", Some("{\"step\":1}")));
    let since: Vec<String> = store.events_since(&ids[2], Some(&events[0])).await.unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(since, vec!["step 1", "step 2"], "streaming reads forward from a cursor");

    store.add_checkpoint(&ids[2], 4, "{}").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    store.add_checkpoint(&ids[2], 8, "{}").await.unwrap();
    let steps: Vec<i64> = store.checkpoints(&ids[2], None, 10).await.unwrap().into_iter().map(|c| c.step).collect();
    assert_eq!(steps, vec![8, 4]);

    let model = FineTunedModel {
        id: "ft:davinci:org:x:1".into(),
        base: "gemma".into(),
        path: "/m/x.gguf".into(),
        owned_by: "org".into(),
        job_id: ids[3].clone(),
        created_at: 5,
    };
    store.insert_fine_tuned_model(&model).await.unwrap();
    assert_eq!(store.fine_tuned_models().await.unwrap(), vec![model.clone()]);
    assert!(store.delete_fine_tuned_model(&model.id).await.unwrap());
    assert!(!store.delete_fine_tuned_model(&model.id).await.unwrap());
    assert!(store.fine_tuned_models().await.unwrap().is_empty());
}
