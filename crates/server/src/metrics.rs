//! Prometheus metrics (`GET /metrics`, text format). Request metrics are recorded by the
//! access layer (`access.rs`) as each request ends; token timings by the text streams
//! (`generate.rs`); the engines' own state (running sequences, queue, KV memory, prefix
//! hits) is read from them at each scrape, so it is never stale.
use crate::state::{AppState, LoadedModel};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Latency buckets in seconds: 5 ms to 2 minutes (a long completion on a CPU).
const LATENCY_BUCKETS: [f64; 16] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0];
/// Gaps between tokens: 1 ms to 5 s.
const TOKEN_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 5.0];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub inter_token_latency: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub generation_tokens: IntCounterVec,
    pub queue_rejections: IntCounterVec,
    pub model_load: GaugeVec,
    running: IntGaugeVec,
    queued: IntGaugeVec,
    kv_cache_bytes: IntGaugeVec,
    prefix_hits: IntCounterVec,
    prefix_reused_tokens: IntCounterVec,
    /// Serialises scrapes: engine counters are copied in as differences.
    scrape: Mutex<()>,
    /// `--metrics-key`: when set, /metrics wants `Authorization: Bearer <key>`.
    pub key: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("a valid metric");
    registry.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    pub fn new(key: Option<String>) -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registered once");
        let model_load = GaugeVec::new(Opts::new("hearth_model_load_seconds", "Seconds taken to fetch (if needed) and load each model at start."), &["model"])
            .expect("a valid metric");
        r.register(Box::new(model_load.clone())).expect("registered once");
        Self {
            requests: counter(&r, "hearth_requests_total", "HTTP requests answered, by endpoint, model and status code.", &["endpoint", "model", "status"]),
            request_duration: histogram(
                &r,
                "hearth_request_duration_seconds",
                "Time from a request's arrival to the end of its answer (a stream's last byte).",
                &["endpoint", "model"],
                &LATENCY_BUCKETS,
            ),
            time_to_first_token: histogram(
                &r,
                "hearth_time_to_first_token_seconds",
                "Time from a text request's arrival to its first generated token, per choice.",
                &["model"],
                &LATENCY_BUCKETS,
            ),
            inter_token_latency: histogram(
                &r,
                "hearth_inter_token_latency_seconds",
                "Time between consecutive generated tokens of a choice.",
                &["model"],
                &TOKEN_BUCKETS,
            ),
            prompt_tokens: counter(
                &r,
                "hearth_prompt_tokens_total",
                "Prompt (input) tokens of answered requests, as their usage reports.",
                &["endpoint", "model"],
            ),
            generation_tokens: counter(
                &r,
                "hearth_generation_tokens_total",
                "Generated (completion) tokens of answered requests, as their usage reports.",
                &["endpoint", "model"],
            ),
            queue_rejections: counter(&r, "hearth_queue_rejections_total", "Requests refused with 429 because a model's queue was full.", &["model"]),
            running: gauge(&r, "hearth_running_sequences", "Sequences in a text model's running batch.", &["model"]),
            queued: gauge(&r, "hearth_queue_depth", "Requests waiting to join a text model's batch.", &["model"]),
            kv_cache_bytes: gauge(&r, "hearth_kv_cache_usage_bytes", "Bytes of KV cache held by a text model's running sequences.", &["model"]),
            prefix_hits: counter(&r, "hearth_prefix_cache_hits_total", "Sequences that started from a cached prompt prefix.", &["model"]),
            prefix_reused_tokens: counter(
                &r,
                "hearth_prefix_cache_reused_tokens_total",
                "Prompt tokens taken from the prefix cache instead of prefilled.",
                &["model"],
            ),
            model_load,
            registry: r,
            scrape: Mutex::new(()),
            key,
        }
    }

    /// Copies the engines' state in and encodes everything.
    fn render(&self, state: &AppState) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for (id, model) in &state.engines {
            let LoadedModel::Text(engine) = model else { continue };
            let s = engine.stats();
            let labels = [id.as_str()];
            self.running.with_label_values(&labels).set(s.running as i64);
            self.queued.with_label_values(&labels).set(s.queued as i64);
            self.kv_cache_bytes.with_label_values(&labels).set(s.kv_cache_bytes as i64);
            catch_up(&self.prefix_hits.with_label_values(&labels), s.prefix_hits);
            catch_up(&self.prefix_reused_tokens.with_label_values(&labels), s.reused_prompt_tokens);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Moves a counter up to a total the engine keeps.
fn catch_up(counter: &prometheus::IntCounter, total: u64) {
    let have = counter.get();
    if total > have {
        counter.inc_by(total - have);
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(key) = &state.metrics.key {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        if given.is_none_or(|g| !crate::auth::same(g.as_bytes(), key.as_bytes())) {
            return crate::error::ApiError::new(
                StatusCode::UNAUTHORIZED,
                "GET /metrics needs the metrics key (Authorization: Bearer <key>).",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            )
            .into_response();
        }
    }
    let body = state.metrics.render(&state);
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
}

tokio::task_local! {
    /// When the request being handled arrived (set by the access layer).
    static ARRIVED: Instant;
}

/// Runs `f` with `at` as the current request's arrival time.
pub async fn arrived_at<F: std::future::Future>(at: Instant, f: F) -> F::Output {
    ARRIVED.scope(at, f).await
}

/// The current request's arrival time (now, outside a request).
pub fn arrival() -> Instant {
    ARRIVED.try_with(|t| *t).unwrap_or_else(|_| Instant::now())
}

/// Token timing of one choice: the first token's delay from arrival, then the gaps.
pub struct TokenClock {
    metrics: Arc<Metrics>,
    model: String,
    arrived: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    pub fn new(metrics: Arc<Metrics>, model: &str) -> Self {
        Self { metrics, model: model.to_string(), arrived: arrival(), last: None }
    }

    /// `n` tokens arrived together: the gap since the last is shared among them.
    pub fn tokens(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let labels = [self.model.as_str()];
        match self.last {
            None => self.metrics.time_to_first_token.with_label_values(&labels).observe(now.duration_since(self.arrived).as_secs_f64()),
            Some(last) => {
                let gap = now.duration_since(last).as_secs_f64() / n as f64;
                let h = self.metrics.inter_token_latency.with_label_values(&labels);
                (0..n).for_each(|_| h.observe(gap));
            }
        }
        self.last = Some(now);
    }
}
