-- The runs of one workflow, newest first, per status: the runs list filtered by workflow
-- (GET /api/v1/runs?workflow=, the web UI's runs page; serve.sql, run_search_workflow).
-- Without it that filter scanned every run (1.1 M runs: 0.25-0.85 s a page). Partial as
-- runs_status is (migration 0008): a claim and a renewed lease, whose versions are
-- 'running', write no entry here; a start and each release or end write one, as they
-- do in runs_status. IF NOT EXISTS: on a large store an operator may build it ahead,
-- without blocking starts, with CREATE INDEX CONCURRENTLY under this name and
-- definition (docs/postgres.md); this transaction then finds it.
CREATE INDEX IF NOT EXISTS runs_workflow ON {schema}.runs (workflow, status, created_at)
    WHERE status <> 'running';
