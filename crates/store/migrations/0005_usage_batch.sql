-- Whether a usage row is a batch's request (1) or a request sent directly (0),
-- for the usage API's `batch` (group_by=batch). Rows recorded before this
-- migration count as direct requests.
ALTER TABLE usage ADD COLUMN batch BIGINT NOT NULL DEFAULT 0;
