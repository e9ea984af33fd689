-- The API key that created a job (NULL: a server without keys). Other keys
-- cannot see the job; admin keys see every job.
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_kind_owner ON jobs (kind, owner);
