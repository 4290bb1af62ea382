-- Run events in an order that depends only on the writers of the run's own events, not
-- on every transaction of the server (migration 0004's order).
--
-- Before, readers ordered a run's events by (txid, event_id) and read only the rows of
-- transactions older than every transaction still running anywhere on the server
-- (pg_snapshot_xmin): one transaction left open in any database of the cluster (an
-- idle session in transaction, another application's long UPDATE) withheld every run's
-- events until it ended.
--
-- Now every transaction that writes a run's events holds a lock on the run's row that
-- conflicts with every other such writer's (FOR NO KEY UPDATE, or the UPDATE itself)
-- from before its rows take their event ids until it commits: status and live-status
-- events come from an UPDATE of the row; the appends lock it FOR NO KEY UPDATE
-- (queries.sql); the journal's row trigger, which writes the events of every other
-- write of the journal (a signal taken, a child started, a retry, an erase, an
-- operator's SQL), and publish_stored (a streamed chunk) lock it below. (A fork writes
-- the journal of a run it inserted itself: the lock is its own, as is the row until it
-- commits.) A writer waiting for that lock finds the
-- previous holder committed (its xid ends before its locks are released), and event ids
-- come from a sequence in the order they are taken, so per run, ids are handed out in
-- commit order: whatever a snapshot sees of a run's events is a prefix in event_id
-- order, and a cursor on event_id never skips one that commits late.
--
-- New rows store no txid (NULL: 8 bytes less per row and per index entry); the index
-- run_events_run (run_id, txid, event_id) puts them, by event_id, after the rows of
-- older transactions (NULLs sort last), which keep their txid and their order. Readers
-- read both in that order (serve.sql, run_events_read): an old row's id is still
-- <txid>-<event_id>, a new row's is <event_id>, so a cursor a client held before the
-- upgrade (Last-Event-ID) resumes right after its event: the old rows after it, then
-- every new row. The ALTER waits for every transaction that wrote to run_events, so
-- every old row is committed once this migration is: none needs the horizon any more.

ALTER TABLE {schema}.run_events ALTER COLUMN txid DROP NOT NULL,
                                ALTER COLUMN txid DROP DEFAULT;

-- One value at a time, in the order asked (a backend caching values would hand out
-- ids out of that order).
ALTER SEQUENCE {schema}.run_events_event_id_seq CACHE 1;

CREATE OR REPLACE FUNCTION {schema}.publish_stored(run text, channel text, data text,
                                                   parts text[])
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {schema}.runs WHERE run_id = run FOR NO KEY UPDATE;
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (run, 'chunk', data);
    RETURN {schema}.publish(channel, parts);
END
$$;

-- Every write of the journal that is not an append's own op event (migration 0009)
-- gets its event from this trigger: it locks the run's row first, so that no writer
-- can forget to (an operator's SQL; the engine's writers hold it already, and locking
-- a row this transaction holds is a no-op).
CREATE OR REPLACE FUNCTION {schema}.run_events_journal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status
       AND OLD.attempts IS NOT DISTINCT FROM NEW.attempts
       AND OLD.error IS NOT DISTINCT FROM NEW.error THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM {schema}.runs WHERE run_id = NEW.run_id FOR NO KEY UPDATE;
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'o',
        NEW.position || ' ' || NEW.attempts || ' ' || NEW.status || ' ' || NEW.kind || ' '
        || NEW.name);
    RETURN NULL;
END
$$;
