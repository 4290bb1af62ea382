-- The run events' index keyed by a 64-bit hash of the run id instead of the id itself.
--
-- run_events_run (run_id, txid, event_id) held the run id in every entry: a Tether run
-- id is 32 characters, so an entry of a row stored since migration 0013 (txid NULL) was
-- 64 bytes (an 8-byte header and a null bitmap padded to 16, the id padded to 40, the
-- event id 8) plus its 4-byte line pointer. A run that waits on a signal has two events
-- (running, waiting): 128 of the ~570 live bytes it keeps in the store.
--
-- Now the rows stored since migration 0013 (txid NULL, every new row) are indexed by
-- (hashtextextended(run_id, 0), event_id): 24 bytes and a line pointer an entry, no null
-- bitmap; readers (serve.sql) look a run up by its hash and check the run id itself, so
-- two ids with the same hash are told apart (their rows only share index ranges). The
-- rows stored before 0013 (txid set, never written any more) keep the old key in a
-- partial index of their own; a store created since 0013 has none and keeps it empty.
-- The order a reader gets is the same: the old rows by (txid, event_id), then the new
-- ones by event_id.
--
-- The hash is the built-in one of hash partitioning (immutable; the index is computed
-- and read by the server that holds it, and a dump and restore rebuilds it, so its
-- values need not be the same on any other). The forgetting trigger (a run deleted:
-- purge, erase) and the erase's delete of chunks look the run up the same way.
--
-- Building the indexes reads run_events once and blocks its writes (every status
-- change and finished step) while it runs: on a large store an operator may build them
-- ahead with CREATE INDEX CONCURRENTLY under these names and definitions
-- (docs/postgres.md); this transaction then finds them. Workers and serve processes of
-- the code before keep working against the new schema (they read by run_id: without
-- run_events_run, a sequential scan of run_events), slower on a large store until
-- they are replaced.

CREATE INDEX IF NOT EXISTS run_events_key
    ON {schema}.run_events (hashtextextended(run_id, 0), event_id) WHERE txid IS NULL;
CREATE INDEX IF NOT EXISTS run_events_run_txid
    ON {schema}.run_events (run_id, txid, event_id) WHERE txid IS NOT NULL;
DROP INDEX IF EXISTS {schema}.run_events_run;

CREATE OR REPLACE FUNCTION {schema}.run_events_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {schema}.run_events
    WHERE hashtextextended(run_id, 0) = hashtextextended(OLD.run_id, 0)
      AND run_id = OLD.run_id AND txid IS NULL;
    DELETE FROM {schema}.run_events
    WHERE run_id = OLD.run_id AND txid IS NOT NULL;
    RETURN NULL;
END
$$;
