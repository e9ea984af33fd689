//! The job runner: one fine-tuning job at a time, on a blocking thread, oldest
//! first. Jobs are in the store, so a restarted server takes up where the last
//! one stopped: a job that was `running` resumes from the trainer's checkpoint
//! (or fails, saying why, when it cannot), `queued` jobs run in turn, and
//! unfinished batches run again. Training yields to serving: at every step the
//! trainer calls back, and the callback blocks while interactive requests are
//! in flight (`priority::Interactive`).
use super::spec::{FtJob, CURRENT, LEGACY};
use super::trainer::{self, Run, Step};
use super::{batches, read_file, write_file, ORG};
use crate::state::{AppState, TrainingSetup, TunedModel};
use anyhow::{Context, Result};
use hearth_store::{now, FineTunedModel};
use serde_json::{json, Value};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the idle runner sleeps when nobody wakes it (another replica may queue jobs).
const IDLE: Duration = Duration::from_secs(2);

/// Starts the runner (and takes up unfinished batches).
pub fn spawn(state: Arc<AppState>) {
    tokio::spawn(async move {
        if let Err(e) = batches::resume(state.clone()).await {
            tracing::error!("resuming batches: {e:#}");
        }
        loop {
            match next_job(&state).await {
                Ok(Some(job)) => {
                    let id = job.id.clone();
                    if let Err(e) = run_job(&state, job).await {
                        tracing::error!("fine-tuning job {id}: {e:#}");
                        let _ = fail(&state, &id, "server_error", &format!("{e:#}")).await;
                    }
                }
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE, state.jobs_wake.notified()).await;
                }
                Err(e) => {
                    tracing::error!("reading jobs: {e:#}");
                    tokio::time::sleep(IDLE).await;
                }
            }
        }
    });
}

/// The job to run now: one that was running (a restart interrupted it), else the oldest queued.
async fn next_job(state: &AppState) -> Result<Option<FtJob>> {
    let Some(platform) = &state.platform else { return Ok(None) };
    let mut candidates = Vec::new();
    for kind in [CURRENT, LEGACY] {
        candidates.extend(platform.store.jobs_in(kind, &["running", "queued", "validating_files"]).await?);
    }
    candidates.sort_by_key(|j| (j.status != "running", j.created_at, j.id.clone()));
    candidates.into_iter().next().map(|j| serde_json::from_str(&j.body).context("a stored job")).transpose()
}

async fn save(state: &AppState, job: &FtJob, expected: &str) -> Result<bool> {
    let store = &state.platform.as_ref().context("no store")?.store;
    store.update_job_if(&job.id, expected, &job.status, &serde_json::to_string(job)?).await
}

async fn event(state: &AppState, id: &str, level: &str, message: &str, data: Option<Value>) {
    if let Some(p) = &state.platform {
        if let Err(e) = p.store.add_event(id, level, message, data.map(|d| d.to_string()).as_deref()).await {
            tracing::error!("job {id}: recording an event: {e:#}");
        }
    }
}

/// Marks the job failed with `error` (unless it finished meanwhile).
async fn fail(state: &AppState, id: &str, code: &str, message: &str) -> Result<()> {
    let store = &state.platform.as_ref().context("no store")?.store;
    let Some(row) = store.job(id).await? else { return Ok(()) };
    let mut job: FtJob = serde_json::from_str(&row.body)?;
    if super::spec::FINISHED.contains(&job.status.as_str()) {
        return Ok(());
    }
    let previous = job.status.clone();
    event(state, id, "error", &format!("Fine-tuning job failed: {message}"), None).await;
    job.status = "failed".into();
    job.error = Some(json!({"code": code, "message": message, "param": null}));
    job.finished_at = Some(now());
    job.updated_at = now();
    save(state, &job, &previous).await?;
    Ok(())
}

/// The name OpenAI gives the model: `ft:<base>:<org>:<suffix>:<id>`, or for a
/// legacy fine-tune `<base>:ft-<org>:<suffix>-<date>`.
fn model_name(job: &FtJob) -> String {
    if job.legacy {
        let t = now();
        let date = format!("{}-{:02}-{:02}-{:02}", hearth_catalog::date_of(t), t % 86_400 / 3600, t % 3600 / 60, t % 60);
        match &job.asked.suffix {
            Some(s) => format!("{}:ft-{ORG}:{s}-{date}", job.asked.model),
            None => format!("{}:ft-{ORG}-{date}", job.asked.model),
        }
    } else {
        let short = job.id.trim_start_matches("ftjob-");
        let short = &short[short.len().saturating_sub(8)..];
        format!("ft:{}:{ORG}:{}:{short}", job.asked.model, job.asked.suffix.clone().unwrap_or_default())
    }
}

/// A file name for a model id (ids hold `:`).
fn file_stem(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// Moves a job from `validating_files` to `queued` once its files pass (or fails
/// it, naming the problem), and wakes the runner. Run when a job is created and
/// by the runner for a job a restart left validating; a job that moved on
/// meanwhile (validated by the other, or cancelled) is left as it is.
pub async fn validate(state: Arc<AppState>, id: String) {
    if let Err(e) = validate_files(&state, &id).await {
        tracing::error!("fine-tuning job {id}: validating files: {e:#}");
        let _ = fail(&state, &id, "server_error", &format!("{e:#}")).await;
    }
    state.jobs_wake.notify_one();
}

async fn validate_files(state: &AppState, id: &str) -> Result<()> {
    let platform = state.platform.clone().context("no store")?;
    let Some(row) = platform.store.job(id).await? else { return Ok(()) };
    let mut job: FtJob = serde_json::from_str(&row.body)?;
    if job.status != "validating_files" {
        return Ok(());
    }
    let files = [Some((&job.asked.training_file, "training_file")), job.asked.validation_file.as_ref().map(|f| (f, "validation_file"))];
    for (file, param) in files.into_iter().flatten() {
        let bytes = read_file(&platform, file).await.with_context(|| format!("reading the {param}"))?;
        if let Err(e) = super::spec::check_data(&bytes, job.asked.data, param) {
            let code = if param == "training_file" { "invalid_training_file" } else { "invalid_validation_file" };
            return fail(state, id, code, &e.body.error.message).await;
        }
    }
    job.status = "queued".into();
    job.updated_at = now();
    if save(state, &job, "validating_files").await? {
        event(state, id, "info", "Files validated, moving job to queued state", None).await;
    }
    Ok(())
}

async fn run_job(state: &Arc<AppState>, mut job: FtJob) -> Result<()> {
    let platform = state.platform.clone().context("no store")?;
    if job.status == "validating_files" {
        // A restart left it validating: validate it here, then run it if it was queued.
        validate(state.clone(), job.id.clone()).await;
        let Some(row) = platform.store.job(&job.id).await? else { return Ok(()) };
        job = serde_json::from_str(&row.body)?;
        if job.status != "queued" {
            return Ok(());
        }
    }
    let setup = state.training.clone().context("this server has no models directory for fine-tuning")?;
    let resuming = job.status == "running";
    let previous = job.status.clone();
    // What the base was trained from, and the data.
    let entry = state.catalog.model(&job.asked.base).with_context(|| format!("the base model `{}` is no longer in the catalog", job.asked.base))?.clone();
    let models_dir = setup.models_dir.clone();
    let base_gguf = tokio::task::spawn_blocking(move || hearth_catalog::fetch::ensure(&entry, &models_dir)).await??;
    let train = read_file(&platform, &job.asked.training_file).await.context("reading the training file")?;
    let validation = match &job.asked.validation_file {
        Some(id) => Some(read_file(&platform, id).await.context("reading the validation file")?),
        None => None,
    };
    let examples = super::spec::check_data(&train, job.asked.data, "training_file").map_err(super::to_anyhow)?;
    job.asked.hyper = trainer::resolve(&job.asked.hyper, examples, job.legacy)?;
    job.status = "running".into();
    job.updated_at = now();
    if !save(state, &job, &previous).await? {
        return Ok(()); // cancelled meanwhile
    }
    if resuming {
        event(state, &job.id, "info", "The server restarted during training: resuming from the last checkpoint", None).await;
    } else {
        event(state, &job.id, "info", "Fine-tuning job started", None).await;
    }
    let name = model_name(&job);
    let output_gguf = setup.tuned_dir.join(format!("{}.gguf", file_stem(&name)));
    let run = Run {
        base_gguf,
        train,
        validation,
        hyper: job.asked.hyper.clone(),
        seed: job.asked.seed as u64,
        output_gguf: output_gguf.clone(),
        checkpoint_dir: setup.work_dir.join(&job.id),
    };
    let handle = tokio::runtime::Handle::current();
    let (st, id, model) = (state.clone(), job.id.clone(), name.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let mut on_step = |s: &Step| -> ControlFlow<()> {
            let cancelled = match st.platform.as_ref() {
                Some(p) => matches!(handle.block_on(p.store.job(&id)), Ok(Some(j)) if j.status == "cancelled"),
                None => false,
            };
            if cancelled {
                return ControlFlow::Break(());
            }
            let metrics = json!({"step": s.step, "total_steps": s.total_steps, "epoch": s.epoch, "train_loss": s.train_loss, "valid_loss": s.valid_loss});
            let message = match s.valid_loss {
                Some(v) => format!("Step {}/{} (epoch {}): training loss={:.4}, validation loss={v:.4}", s.step, s.total_steps, s.epoch, s.train_loss),
                None => format!("Step {}/{} (epoch {}): training loss={:.4}", s.step, s.total_steps, s.epoch, s.train_loss),
            };
            handle.block_on(event(&st, &id, "info", &message, Some(metrics.clone())));
            if s.checkpoint {
                let body = json!({"fine_tuned_model_checkpoint": format!("{model}:ckpt-step-{}", s.step), "metrics": metrics});
                if let Some(p) = st.platform.as_ref() {
                    let _ = handle.block_on(p.store.add_checkpoint(&id, s.step as i64, &body.to_string()));
                }
            }
            // Serving first: wait here while interactive requests run.
            st.interactive.wait_idle_blocking();
            ControlFlow::Continue(())
        };
        trainer::train(&run, &mut on_step)
    })
    .await?;
    let finished = match outcome {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()), // cancelled: cancel_job wrote the status
        Err(e) => return fail(state, &job.id, "training_failed", &format!("{e:#}")).await,
    };
    // The results belong to the job's key.
    let owner = platform.store.job(&job.id).await?.and_then(|j| j.owner);
    let results = write_file(&platform, owner, "fine-tune-results", "step_metrics.csv", finished.result_csv.into_bytes()).await?;
    // Served at once, and after every restart.
    let engine_config = setup.engine.clone();
    let load_path = output_gguf.clone();
    let engine = tokio::task::spawn_blocking(move || hearth_engine::text::TextEngine::load(&load_path, engine_config)).await??;
    let record = FineTunedModel {
        id: name.clone(),
        base: job.asked.base.clone(),
        path: output_gguf.display().to_string(),
        owned_by: ORG.into(),
        job_id: job.id.clone(),
        created_at: now(),
    };
    platform.store.insert_fine_tuned_model(&record).await?;
    state.tuned.write().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), TunedModel { record, engine });
    event(state, &job.id, "info", &format!("New fine-tuned model created: {name}"), None).await;
    event(state, &job.id, "info", "The job has successfully completed", None).await;
    job.status = "succeeded".into();
    job.fine_tuned_model = Some(name);
    job.trained_tokens = Some(finished.trained_tokens as i64);
    job.result_files = vec![results.id];
    job.finished_at = Some(now());
    job.updated_at = now();
    save(state, &job, "running").await?;
    let _ = std::fs::remove_dir_all(setup.work_dir.join(&job.id));
    Ok(())
}

/// Where a fine-tuned model's weights are: the recorded path, else a file of
/// the same name in the state directory's `fine_tuned/` (a state directory
/// moved elsewhere), else in the model cache (where versions before
/// `fine_tuned/` wrote them). The recorded path when none exists.
fn weights(recorded: &str, setup: &TrainingSetup) -> PathBuf {
    let recorded = PathBuf::from(recorded);
    let Some(name) = recorded.file_name() else { return recorded };
    let candidates = [recorded.clone(), setup.tuned_dir.join(name), setup.models_dir.join(name)];
    candidates.into_iter().find(|p| p.is_file()).unwrap_or(recorded)
}

/// Loads the fine-tuned models the store lists (at start). One whose weights
/// are gone is left out, with a warning.
pub async fn load_tuned(state: &AppState) -> Result<()> {
    let Some(platform) = &state.platform else { return Ok(()) };
    let Some(setup) = &state.training else { return Ok(()) };
    for mut record in platform.store.fine_tuned_models().await? {
        let path = weights(&record.path, setup);
        record.path = path.display().to_string();
        let config = setup.engine.clone();
        match tokio::task::spawn_blocking(move || hearth_engine::text::TextEngine::load(&path, config)).await? {
            Ok(engine) => {
                tracing::info!("fine-tuned model `{}` ready", record.id);
                state.tuned.write().unwrap_or_else(|p| p.into_inner()).insert(record.id.clone(), TunedModel { record, engine });
            }
            Err(e) => tracing::warn!("fine-tuned model `{}` not loaded: {e:#}", record.id),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_found_where_they_were_written() {
        let root = std::env::temp_dir().join(format!("hearth-weights-{}", std::process::id()));
        let setup = TrainingSetup {
            models_dir: root.join("cache"),
            tuned_dir: root.join("state/fine_tuned"),
            engine: Default::default(),
            work_dir: root.join("state/jobs"),
        };
        for dir in [&setup.models_dir, &setup.tuned_dir] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let (new, old) = (setup.tuned_dir.join("ft_new.gguf"), setup.models_dir.join("ft_old.gguf"));
        std::fs::write(&new, b"x").unwrap();
        std::fs::write(&old, b"x").unwrap();
        // Recorded paths that exist are used as they are (older versions recorded the cache's).
        assert_eq!(weights(new.to_str().unwrap(), &setup), new);
        assert_eq!(weights(old.to_str().unwrap(), &setup), old);
        // A state directory moved elsewhere: found by name in `fine_tuned/`, then in the cache.
        assert_eq!(weights("/moved/state/fine_tuned/ft_new.gguf", &setup), new);
        assert_eq!(weights("/moved/state/fine_tuned/ft_old.gguf", &setup), old);
        assert_eq!(weights("/nowhere/ft_gone.gguf", &setup), PathBuf::from("/nowhere/ft_gone.gguf"));
        std::fs::remove_dir_all(root).unwrap();
    }
}
