-- Which runs reference which content-addressed texts (tether_blobs, migration 0002), so
-- that retention deletes a text once no remaining run references it; and how many times
-- in a row a run's worker died while executing it without the journal moving on.

-- One row per (text, run that stored or uses it). A run adds its rows in the transaction
-- that stores the texts, before the texts; a fork copies its source's rows; purge and
-- erase delete a run's rows and then every text of those keys that no row references.
CREATE TABLE tether_blob_refs (
    key    TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (key, run_id)
) WITHOUT ROWID;
CREATE INDEX tether_blob_refs_run ON tether_blob_refs (run_id);

-- Texts stored before this migration have no known referrer: '' keeps them.
INSERT INTO tether_blob_refs (key, run_id) SELECT key, '' FROM tether_blobs;

-- Takeovers of a running run (its owner died without handing it back): a claim of a run
-- that was 'running' adds one. crashes_seen is the count the worker that took it over
-- last acknowledged (so a claim with crashes > crashes_seen is a takeover), and
-- crash_progress how many journal entries were final then (NULL: never); a takeover
-- that finds more starts counting again from 1 (see Worker._crash_check).
ALTER TABLE tether_runs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tether_runs ADD COLUMN crashes_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tether_runs ADD COLUMN crash_progress INTEGER;
