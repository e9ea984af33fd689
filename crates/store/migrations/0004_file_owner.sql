-- The API key that uploaded a file, or whose job wrote it (a batch's output
-- and error files, a fine-tuning job's results). Other non-admin keys cannot
-- see it; admin keys see every file. NULL: a file with no owner, readable by
-- every key: uploaded on a server without keys, or before this migration.
ALTER TABLE files ADD COLUMN owner TEXT;
CREATE INDEX files_owner ON files (owner, id);
