-- The ended runs of one workflow, oldest first: what retention per workflow purges
-- (@app.workflow(retention=...), the app's policy less the workflows with their own,
-- `tether purge --workflow`; _lifecycle.py, run_purge). Without it the purge of one
-- workflow walked runs_finished through every other workflow's older runs: 1.2 M runs,
-- a chat workflow kept 7 days beside an audit workflow kept a year, read 545,618 rows
-- to find 100 in 1.5 s a turn, holding the lock on blob_refs; with it 0.4 ms. Partial as
-- runs_finished: a run's end writes one entry, nothing before. IF NOT EXISTS: on a large
-- store an operator may build it ahead, without blocking writes, with CREATE INDEX
-- CONCURRENTLY under this name and definition (docs/postgres.md).
CREATE INDEX IF NOT EXISTS runs_workflow_finished ON {schema}.runs (workflow, finished_at)
    WHERE finished_at IS NOT NULL;
