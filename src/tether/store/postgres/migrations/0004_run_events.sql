-- What `tether serve` streams to a run's observers (Server-Sent Events), kept in the store
-- so that a client reconnecting with Last-Event-ID to any serve process gets what it
-- missed, once. Triggers record journal and run changes in the writing transaction, so
-- no engine code path can forget one; run_publish inserts streamed LLM chunks.
-- kind: 'op' (a journal entry finished, failed or was retried), 'status' (the run's
-- status changed), 'live' (its live status changed), 'chunk' (a streamed LLM chunk).
--
-- Sequence values are not handed out in commit order: a reader that saw event 11 may
-- later find event 10 commit. So readers order by (txid, event_id) and read only rows of
-- transactions older than every transaction still running (pg_snapshot_xmin): later
-- commits can only add rows after that point, and a cursor never skips one.

CREATE TABLE {schema}.run_events (
    event_id   bigserial PRIMARY KEY,
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    run_id     text NOT NULL,
    kind       text NOT NULL,
    data       text
);
CREATE INDEX run_events_run ON {schema}.run_events (run_id, txid, event_id);

CREATE FUNCTION {schema}.run_events_journal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status
       AND OLD.attempts IS NOT DISTINCT FROM NEW.attempts
       AND OLD.error IS NOT DISTINCT FROM NEW.error THEN
        RETURN NULL;
    END IF;
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'op',
        json_build_object('position', NEW.position, 'kind', NEW.kind, 'name', NEW.name,
                          'status', NEW.status, 'attempts', NEW.attempts)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER run_events_journal AFTER INSERT OR UPDATE ON {schema}.journal
FOR EACH ROW WHEN (NEW.status <> 'pending' OR NEW.error IS NOT NULL) EXECUTE FUNCTION {schema}.run_events_journal();

CREATE FUNCTION {schema}.run_events_run() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'status',
            json_build_object('status', NEW.status, 'waiting_for', NEW.waiting_for)::text);
    END IF;
    IF OLD.status_info IS DISTINCT FROM NEW.status_info THEN
        INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'live', NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_events_run AFTER UPDATE OF status, status_info ON {schema}.runs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                   OR OLD.status_info IS DISTINCT FROM NEW.status_info)
EXECUTE FUNCTION {schema}.run_events_run();

CREATE FUNCTION {schema}.run_events_forget() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {schema}.run_events WHERE run_id = OLD.run_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_events_forget AFTER DELETE ON {schema}.runs
FOR EACH ROW EXECUTE FUNCTION {schema}.run_events_forget();

-- Store a streamed chunk and notify the run's channel in the caller's transaction.
CREATE FUNCTION {schema}.publish_stored(run text, channel text, data text, parts text[])
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (run, 'chunk', data);
    RETURN {schema}.publish(channel, parts);
END
$$;
