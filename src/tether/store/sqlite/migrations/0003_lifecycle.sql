-- Runs over their whole life: code versions, forks, continue-as-new generations,
-- every execution attempt of a step, schedules and retention.

-- The code version the run was started under (NULL: any worker may claim it).
ALTER TABLE tether_runs ADD COLUMN version TEXT;
-- A fork: the run it was copied from and the position it was cut at.
ALTER TABLE tether_runs ADD COLUMN forked_from TEXT;
ALTER TABLE tether_runs ADD COLUMN forked_at INTEGER;
-- How many times the run continued as new (its earlier journals are archived).
ALTER TABLE tether_runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- When an operator erased the run's payloads (tether erase), or NULL.
ALTER TABLE tether_runs ADD COLUMN erased_at REAL;
CREATE INDEX tether_runs_finished ON tether_runs (finished_at) WHERE finished_at IS NOT NULL;

-- Every execution attempt of a step, with the worker that ran it. An attempt still
-- 'running' whose worker no longer holds the run was cut off (shown as interrupted).
CREATE TABLE tether_attempts (
    attempt_id  TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    error       TEXT
) WITHOUT ROWID;
CREATE INDEX tether_attempts_run ON tether_attempts (run_id, generation, position);

-- The journals of earlier generations of runs that continued as new.
CREATE TABLE tether_journal_archive (
    run_id          TEXT NOT NULL,
    generation      INTEGER NOT NULL,
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
    input           TEXT,
    PRIMARY KEY (run_id, generation, position)
) WITHOUT ROWID;

-- Cron schedules: each tick starts one run whose id is derived from name and tick.
CREATE TABLE tether_schedules (
    name        TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    queue       TEXT NOT NULL,
    cron        TEXT NOT NULL,
    timezone    TEXT NOT NULL,
    input       TEXT NOT NULL,
    overlap     TEXT NOT NULL,
    catchup     TEXT NOT NULL,
    catchup_max INTEGER NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_tick   REAL,
    last_tick   REAL,
    last_run_id TEXT,
    version     TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
