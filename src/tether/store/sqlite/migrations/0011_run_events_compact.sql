-- Run events (migrations 0004, 0010) stored compactly. A run that parks on a timer writes
-- three events (running, its first operation, waiting) and each finished step one; their
-- JSON text (`{"status":"running","waiting_for":null}`, 39 bytes; an op's 66) was most of
-- each row: 295 of the ~570 bytes of store per waiting run. New rows hold only the
-- values, under one-letter kinds that older rows never used, and run_events_read
-- (serve.sql) builds the same JSON text from them with the same json_object calls, so a
-- reader cannot tell old rows from new ones:
--   kind 's': data = status, or status || ' ' || waiting_for (a status has no space)
--   kind 'o': data = json_array(position, attempts, status, kind, name)
-- 'live' and 'chunk' rows are unchanged. Rows stored before this migration keep their
-- kind and JSON text. The event ids are computed as in migration 0010.

DROP TRIGGER tether_run_events_journal_insert;
DROP TRIGGER tether_run_events_journal_update;
DROP TRIGGER tether_run_events_status;

CREATE TRIGGER tether_run_events_journal_insert AFTER INSERT ON tether_journal
WHEN NEW.status <> 'pending' OR NEW.error IS NOT NULL
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 (SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs
                  WHERE run_id = NEW.run_id), 0) + 1,
        'o', json_array(NEW.position, NEW.attempts, NEW.status, NEW.kind, NEW.name));
END;

CREATE TRIGGER tether_run_events_journal_update AFTER UPDATE ON tether_journal
WHEN (NEW.status <> 'pending' OR NEW.error IS NOT NULL)
     AND (OLD.status IS NOT NEW.status OR OLD.attempts IS NOT NEW.attempts
          OR OLD.error IS NOT NEW.error)
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 (SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs
                  WHERE run_id = NEW.run_id), 0) + 1,
        'o', json_array(NEW.position, NEW.attempts, NEW.status, NEW.kind, NEW.name));
END;

CREATE TRIGGER tether_run_events_status AFTER UPDATE OF status ON tether_runs
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 CAST(NEW.created_at * 1000000 AS INTEGER), 0) + 1,
        's', NEW.status || coalesce(' ' || NEW.waiting_for, ''));
END;
