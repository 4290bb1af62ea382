-- Run events (migration 0004) stored compactly. A run that parks on a timer writes three
-- events (running, its first operation, waiting) and each finished step one; their JSON
-- text (`{"status" : "running", "waiting_for" : null}`, 44 bytes; an op's 80) was most
-- of each row. New rows hold only the values, under one-letter kinds that older rows
-- never used, and run_events_read (serve.sql) builds the same JSON text from them with
-- the same json_build_object calls, so a reader cannot tell old rows from new ones:
--   kind 's': data = status, or status || ' ' || waiting_for (a status has no space)
--   kind 'o': data = position || ' ' || attempts || ' ' || status || ' ' || kind
--             || ' ' || name (only the name, last, may hold spaces)
-- 'live' and 'chunk' rows are unchanged. Rows stored before this migration keep their
-- kind and JSON text.

CREATE OR REPLACE FUNCTION {schema}.run_events_journal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status
       AND OLD.attempts IS NOT DISTINCT FROM NEW.attempts
       AND OLD.error IS NOT DISTINCT FROM NEW.error THEN
        RETURN NULL;
    END IF;
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'o',
        NEW.position || ' ' || NEW.attempts || ' ' || NEW.status || ' ' || NEW.kind || ' '
        || NEW.name);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.run_events_run() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 's',
            NEW.status || coalesce(' ' || NEW.waiting_for, ''));
    END IF;
    IF OLD.status_info IS DISTINCT FROM NEW.status_info THEN
        INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'live', NULL);
    END IF;
    RETURN NULL;
END
$$;
