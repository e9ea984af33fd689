-- Background jobs: fine-tuning jobs (current and legacy API) and batches.
-- A job's OpenAI object is kept whole as JSON (`body`); its status is a
-- column of its own so that a starting server finds the jobs it must resume.
-- Ids begin with their creation time in fixed-width hex: ordering by id is
-- ordering by creation.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX jobs_kind_status ON jobs (kind, status);

-- What happened to a job, in order (fine-tuning events).
CREATE TABLE job_events (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Checkpoints a fine-tuning job reached (step and metrics, as JSON).
CREATE TABLE job_checkpoints (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX job_checkpoints_job ON job_checkpoints (job_id, id);

-- Models made by fine-tuning: served beside the catalog's, loaded at start.
CREATE TABLE fine_tuned_models (
    id TEXT PRIMARY KEY,
    base TEXT NOT NULL,
    path TEXT NOT NULL,
    owned_by TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
