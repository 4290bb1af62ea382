-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the index nor need to
-- know it. It is recorded in tether_schema_compatible, so they keep opening the store
-- during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- The ended runs of one queue, newest first, per status: the runs list filtered by queue
-- (GET /api/v1/runs?queue=, the web UI's runs page, tether runs --queue; serve.sql,
-- run_search_queue). Without it each status's newest runs were read through
-- tether_runs_status until the queue's were found: every run of a status the queue has
-- none of, and for a queue with no run at all every run of the store (1.1 M runs:
-- 0.27-0.52 s a page). Partial, as tether_runs_workflow (0016): a queued, running or
-- waiting run has no entry, so a start, a claim, a renewed lease and a wait write
-- nothing here; a run's end writes one. The list reads a queue's queued, running and
-- waiting runs through tether_runs_status.
CREATE INDEX tether_runs_queue ON tether_runs (queue, status, created_at)
    WHERE status NOT IN ('queued', 'running', 'waiting');
