-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the index nor need to
-- know it. It is recorded in tether_schema_compatible, so they keep opening the store
-- during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- The runs of one workflow, newest first, per status: the runs list filtered by workflow
-- (GET /api/v1/runs?workflow=, the web UI's runs page; serve.sql, run_search_workflow).
-- Without it that filter scanned every run and sorted the workflow's (1.1 M runs:
-- 0.3-5.5 s a page). Partial: a queued, running or waiting run has no entry, so a
-- start, a claim, a renewed lease and a wait write nothing here (a parked run costs no
-- store bytes for it); a run's end writes one. The list reads the queued, running and
-- waiting runs of a workflow through tether_runs_status.
CREATE INDEX tether_runs_workflow ON tether_runs (workflow, status, created_at)
    WHERE status NOT IN ('queued', 'running', 'waiting');
