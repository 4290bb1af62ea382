-- Runs over their whole life: code versions, forks, continue-as-new generations,
-- every execution attempt of a step, schedules and retention.

-- The code version the run was started under (NULL: any worker may claim it).
ALTER TABLE {schema}.runs ADD COLUMN version text;
-- A fork: the run it was copied from and the position it was cut at.
ALTER TABLE {schema}.runs ADD COLUMN forked_from text;
ALTER TABLE {schema}.runs ADD COLUMN forked_at integer;
-- How many times the run continued as new (its earlier journals are archived).
ALTER TABLE {schema}.runs ADD COLUMN generation integer NOT NULL DEFAULT 0;
-- When an operator erased the run's payloads (tether erase), or NULL.
ALTER TABLE {schema}.runs ADD COLUMN erased_at double precision;
CREATE INDEX runs_finished ON {schema}.runs (finished_at) WHERE finished_at IS NOT NULL;

-- Every execution attempt of a step, with the worker that ran it. An attempt still
-- 'running' whose worker no longer holds the run was cut off (shown as interrupted).
CREATE TABLE {schema}.attempts (
    attempt_id  text PRIMARY KEY,
    run_id      text NOT NULL,
    generation  integer NOT NULL,
    position    integer NOT NULL,
    name        text NOT NULL,
    attempt     integer NOT NULL,
    worker_id   text NOT NULL,
    status      text NOT NULL,
    started_at  double precision NOT NULL,
    finished_at double precision,
    error       text
);
CREATE INDEX attempts_run ON {schema}.attempts (run_id, generation, position);

-- The journals of earlier generations of runs that continued as new.
CREATE TABLE {schema}.journal_archive (
    run_id          text NOT NULL,
    generation      integer NOT NULL,
    position        integer NOT NULL,
    kind            text NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL,
    result          text,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    started_at      double precision,
    finished_at     double precision,
    next_attempt_at double precision,
    args            text,
    input           text,
    PRIMARY KEY (run_id, generation, position)
);

-- Cron schedules: each tick starts one run whose id is derived from name and tick.
CREATE TABLE {schema}.schedules (
    name        text PRIMARY KEY,
    workflow    text NOT NULL,
    queue       text NOT NULL,
    cron        text NOT NULL,
    timezone    text NOT NULL,
    input       text NOT NULL,
    overlap     text NOT NULL,
    catchup     text NOT NULL,
    catchup_max integer NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    next_tick   double precision,
    last_tick   double precision,
    last_run_id text,
    version     text,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);
