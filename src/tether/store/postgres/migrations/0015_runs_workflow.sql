-- The runs of one workflow, newest first, per status: the runs list filtered by workflow
-- (GET /api/v1/runs?workflow=, the web UI's runs page; serve.sql, run_search_workflow).
-- Without it that filter scanned every run (1.1 M runs: 0.25-0.86 s a page). Partial:
-- no version of a run that is queued, running or waiting has an entry, so a start, a
-- claim, a renewed lease and a wait write nothing here (no update of runs is HOT: each
-- changes status, so each new version gets an entry in every index whose predicate it
-- meets); a run's end writes one. A parked run stays out so that it costs no store
-- bytes (~50 a waiting run, measured with bench/waiting.py). The list reads the queued,
-- running and waiting runs of a workflow through runs_status and runs_held instead. IF NOT EXISTS: on a large store an
-- operator may build it ahead, without blocking writes, with CREATE INDEX CONCURRENTLY
-- under this name and definition (docs/postgres.md); this transaction then finds it.
CREATE INDEX IF NOT EXISTS runs_workflow ON {schema}.runs (workflow, status, created_at)
    WHERE status NOT IN ('queued', 'running', 'waiting');
