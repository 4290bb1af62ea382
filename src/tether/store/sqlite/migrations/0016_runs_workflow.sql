-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the index nor need to
-- know it. It is recorded in tether_schema_compatible, so they keep opening the store
-- during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- The runs of one workflow, newest first, per status: the runs list filtered by workflow
-- (GET /api/v1/runs?workflow=, the web UI's runs page; serve.sql, run_search_workflow).
-- Without it that filter scanned every run and sorted the workflow's (1.1 M runs:
-- 0.3-5 s a page). Partial: a claim takes the run's entry out and writes none, a
-- renewed lease touches nothing here; a start and each release or end write one.
CREATE INDEX tether_runs_workflow ON tether_runs (workflow, status, created_at)
    WHERE status <> 'running';
