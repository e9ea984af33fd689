-- hearth's persistent state. Portable SQL: the same file runs on SQLite and
-- PostgreSQL. Times are Unix seconds; flags are 0/1 integers.

-- Uploaded files (bytes live in the blob directory, named by id). Ids begin
-- with their creation time in fixed-width hex, so ordering by id is ordering
-- by upload.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- API keys made by `hearth keys create`; only the sha256 of the secret is kept.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    redacted TEXT NOT NULL,
    rpm BIGINT,
    tpm BIGINT,
    zero_retention BIGINT NOT NULL,
    admin BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- One row per answered request: counts only, never content.
CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    api_key_id TEXT,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    audio_seconds DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_created ON usage (created_at);

-- Inputs and outputs of text endpoints, kept for the retention period.
CREATE TABLE request_log (
    id TEXT PRIMARY KEY,
    api_key_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX request_log_created ON request_log (created_at);

-- Fixed one-minute windows of requests and tokens per key (rate limits,
-- shared by every replica that uses the same database).
CREATE TABLE rate_windows (
    api_key_id TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, window_start)
);
