-- The journal holds one entry per operation of a run, keyed by (run_id, position).
-- runs.available_at is when a worker may claim the run: its creation time when queued,
-- its lease expiry while running, its wake-up time while waiting (NULL: not claimable).

CREATE TABLE tether_runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    queue            TEXT NOT NULL,
    status           TEXT NOT NULL,
    input            TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL,
    owner            TEXT,
    fencing_token    INTEGER NOT NULL DEFAULT 0,
    available_at     REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    waiting_for      TEXT,
    status_info      TEXT,
    parent_run_id    TEXT,
    parent_position  INTEGER,
    on_parent_cancel TEXT NOT NULL DEFAULT 'cancel',
    wait_signal      TEXT,
    wait_child       TEXT
);
CREATE INDEX tether_runs_claim ON tether_runs (queue, available_at)
    WHERE available_at IS NOT NULL;
CREATE INDEX tether_runs_owner ON tether_runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX tether_runs_status ON tether_runs (status, created_at);
CREATE INDEX tether_runs_parent ON tether_runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX tether_runs_wait_child ON tether_runs (wait_child) WHERE wait_child IS NOT NULL;

CREATE TABLE tether_journal (
    run_id          TEXT NOT NULL,
    position        INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    started_at      REAL,
    finished_at     REAL,
    next_attempt_at REAL,
    args            TEXT,
    fencing_token   INTEGER NOT NULL,
    PRIMARY KEY (run_id, position)
) WITHOUT ROWID;

CREATE TABLE tether_workers (
    worker_id    TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    pid_start    TEXT NOT NULL,
    queues       TEXT NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);

-- Signals wait here until a wait_for_signal of their name consumes them, in order.
CREATE TABLE tether_signals (
    signal_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT NOT NULL,
    name              TEXT NOT NULL,
    payload           TEXT,
    idempotency_key   TEXT,
    created_at        REAL NOT NULL,
    consumed_position INTEGER,
    UNIQUE (run_id, idempotency_key)
);
CREATE INDEX tether_signals_pending ON tether_signals (run_id, name, signal_id)
    WHERE consumed_position IS NULL;

-- Workflow names known to workers, so runs can be started by name without the code.
CREATE TABLE tether_workflows (
    name       TEXT PRIMARY KEY,
    queue      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
