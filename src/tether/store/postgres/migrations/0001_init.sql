-- Tether's tables in their own schema ({schema} is replaced by the configured name).
-- The journal holds one entry per operation of a run, keyed by (run_id, position).
-- runs.available_at is when a worker may claim the run: its creation time when queued,
-- its lease expiry while running, its wake-up time while waiting (NULL: not claimable).
-- Times are epoch seconds (double precision) from the caller's clock, as in SQLite.
-- Payloads are text, not jsonb: a codec may encrypt or compress them, and jsonb would
-- rewrite the text a journal must hand back byte for byte.

CREATE TABLE {schema}.runs (
    run_id           text PRIMARY KEY,
    workflow         text NOT NULL,
    queue            text NOT NULL,
    status           text NOT NULL,
    input            text NOT NULL,
    result           text,
    error            text,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    finished_at      double precision,
    owner            text,
    fencing_token    bigint NOT NULL DEFAULT 0,
    available_at     double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    waiting_for      text,
    status_info      text,
    parent_run_id    text,
    parent_position  integer,
    on_parent_cancel text NOT NULL DEFAULT 'cancel',
    wait_signal      text,
    wait_child       text
);
CREATE INDEX runs_claim ON {schema}.runs (queue, available_at)
    WHERE available_at IS NOT NULL;
CREATE INDEX runs_owner ON {schema}.runs (owner) WHERE owner IS NOT NULL;
CREATE INDEX runs_status ON {schema}.runs (status, created_at);
CREATE INDEX runs_parent ON {schema}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_wait_child ON {schema}.runs (wait_child) WHERE wait_child IS NOT NULL;

CREATE TABLE {schema}.journal (
    run_id          text NOT NULL,
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
    fencing_token   bigint NOT NULL,
    PRIMARY KEY (run_id, position)
);

CREATE TABLE {schema}.workers (
    worker_id    text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    pid_start    text NOT NULL,
    queues       text NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);

-- Signals wait here until a wait_for_signal of their name consumes them, in order.
CREATE TABLE {schema}.signals (
    signal_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            text NOT NULL,
    name              text NOT NULL,
    payload           text,
    idempotency_key   text,
    created_at        double precision NOT NULL,
    consumed_position integer,
    UNIQUE (run_id, idempotency_key)
);
CREATE INDEX signals_pending ON {schema}.signals (run_id, name, signal_id)
    WHERE consumed_position IS NULL;

-- Workflow names known to workers, so runs can be started by name without the code.
CREATE TABLE {schema}.workflows (
    name       text PRIMARY KEY,
    queue      text NOT NULL,
    updated_at double precision NOT NULL
);

-- Notify the store's channel when n > 0 rows changed; return n. Writes that make work
-- available call it in their own statement, so the NOTIFY commits with the write.
CREATE FUNCTION {schema}.wake(channel text, n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF n > 0 THEN
        PERFORM pg_notify(channel, '');
    END IF;
    RETURN n;
END
$$;
