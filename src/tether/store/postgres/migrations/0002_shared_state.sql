-- Shared state for the AI layer and limits: run metrics, content-addressed texts,
-- compare-and-set values, token buckets, per-queue concurrency limits and live events.

-- A JSON object of numbers (tokens, cost, saved by replay); NULL: none yet.
ALTER TABLE {schema}.runs ADD COLUMN metrics text;

-- Runs a worker holds, per queue, counted by claims on queues with a limit.
CREATE INDEX runs_held ON {schema}.runs (queue, available_at) WHERE status = 'running';

-- Texts keyed by their digest (e.g. long prompts stored once, referenced by journals).
CREATE TABLE {schema}.blobs (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Small shared values changed by compare-and-set (e.g. a provider's circuit breaker).
CREATE TABLE {schema}.kv (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    version    bigint NOT NULL,
    updated_at double precision NOT NULL
);

-- Token buckets: tokens left at updated_at; refilled by the caller's clock on each take.
CREATE TABLE {schema}.rate_buckets (
    key        text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at double precision NOT NULL
);

-- At most max_running runs of a queue are held (leased, not expired) at once. A claim
-- on a limited queue locks its row first, so claims of one limited queue take turns.
CREATE TABLE {schema}.queue_limits (
    queue       text PRIMARY KEY,
    max_running integer NOT NULL CHECK (max_running >= 0),
    updated_at  double precision NOT NULL
);

-- Take amount from a token bucket (full at first use, refilled continuously at
-- lim / period per second, up to lim): 0 when taken, else the seconds until amount
-- will be there, taking nothing. The bucket's row lock makes it atomic across hosts;
-- a denied take writes nothing. SqliteStore computes the same (store/_values.py).
CREATE FUNCTION {schema}.rate_acquire(k text, lim float8, period float8, amount float8,
                                      t float8) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    rate  float8 := lim / period;
    left_ float8;
    last  float8;
BEGIN
    SELECT tokens, updated_at INTO left_, last
    FROM {schema}.rate_buckets WHERE key = k FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {schema}.rate_buckets (key, tokens, updated_at)
        VALUES (k, lim, t) ON CONFLICT (key) DO NOTHING;
        SELECT tokens, updated_at INTO left_, last
        FROM {schema}.rate_buckets WHERE key = k FOR UPDATE;
    END IF;
    left_ := least(lim, left_ + greatest(0, t - last) * rate);
    last := greatest(last, t);
    IF left_ + 1e-9 * lim >= amount THEN
        UPDATE {schema}.rate_buckets SET tokens = greatest(left_ - amount, 0),
                                         updated_at = last
        WHERE key = k;
        RETURN 0;
    END IF;
    RETURN greatest((amount - left_) / rate, 1e-6);
END
$$;

-- Send a live event's parts to a channel, in order, in the caller's transaction (so
-- they arrive together and in order).
CREATE FUNCTION {schema}.publish(channel text, parts text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    FOREACH part IN ARRAY parts LOOP
        PERFORM pg_notify(channel, part);
    END LOOP;
    RETURN coalesce(array_length(parts, 1), 0);
END
$$;
