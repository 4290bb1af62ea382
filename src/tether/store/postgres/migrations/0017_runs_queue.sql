-- The ended runs of one queue, newest first, per status: the runs list filtered by queue
-- (GET /api/v1/runs?queue=, the web UI's runs page, tether runs --queue; serve.sql,
-- run_search_queue). Without it each status's newest runs were read through runs_status
-- until the queue's were found: every run of a status the queue has none of, and for a
-- queue with no run at all (a typo's page) every run of the store (1.1 M runs: 0.38 s a
-- page). Partial, as runs_workflow (0015): a queued, running or waiting run has no
-- entry, so a start, a claim, a renewed lease and a wait write nothing here; a run's
-- end writes one. The list reads a queue's queued and waiting runs through runs_status,
-- its running ones through runs_held. IF NOT EXISTS: on a large store an operator may
-- build it ahead, without blocking writes, with CREATE INDEX CONCURRENTLY under this
-- name and definition (docs/postgres.md); this transaction then finds it.
CREATE INDEX IF NOT EXISTS runs_queue ON {schema}.runs (queue, status, created_at)
    WHERE status NOT IN ('queued', 'running', 'waiting');
