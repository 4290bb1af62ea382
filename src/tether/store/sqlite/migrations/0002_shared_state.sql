-- Shared state for the AI layer and limits: run metrics, content-addressed texts,
-- compare-and-set values, token buckets and per-queue concurrency limits.

-- A JSON object of numbers (tokens, cost, saved by replay); NULL: none yet.
ALTER TABLE tether_runs ADD COLUMN metrics TEXT;

-- Runs a worker holds, per queue, counted by claims on queues with a limit.
CREATE INDEX tether_runs_held ON tether_runs (queue, available_at) WHERE status = 'running';

-- Texts keyed by their digest (e.g. long prompts stored once, referenced by journals).
CREATE TABLE tether_blobs (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Small shared values changed by compare-and-set (e.g. a provider's circuit breaker).
CREATE TABLE tether_kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- Token buckets: tokens left at updated_at; refilled by the caller's clock on each take.
CREATE TABLE tether_rate_buckets (
    key        TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- At most max_running runs of a queue are held (leased, not expired) at once.
CREATE TABLE tether_queue_limits (
    queue       TEXT PRIMARY KEY,
    max_running INTEGER NOT NULL CHECK (max_running >= 0),
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
