-- What `tether serve` streams to a run's observers (Server-Sent Events), kept in the store
-- so that a client reconnecting with Last-Event-ID to any serve process gets what it
-- missed, once. Triggers record journal and run changes in the writing transaction, so
-- no engine code path can forget one; run_publish inserts streamed LLM chunks.
-- kind: 'op' (a journal entry finished, failed or was retried), 'status' (the run's
-- status changed), 'live' (its live status changed), 'chunk' (a streamed LLM chunk).
-- SQLite has one writer at a time, so event_id grows in commit order.

CREATE TABLE tether_run_events (
    event_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT
);
CREATE INDEX tether_run_events_run ON tether_run_events (run_id, event_id);

CREATE TRIGGER tether_run_events_journal_insert AFTER INSERT ON tether_journal
WHEN NEW.status <> 'pending' OR NEW.error IS NOT NULL
BEGIN
    INSERT INTO tether_run_events (run_id, kind, data) VALUES (NEW.run_id, 'op',
        json_object('position', NEW.position, 'kind', NEW.kind, 'name', NEW.name,
                    'status', NEW.status, 'attempts', NEW.attempts));
END;

CREATE TRIGGER tether_run_events_journal_update AFTER UPDATE ON tether_journal
WHEN (NEW.status <> 'pending' OR NEW.error IS NOT NULL)
     AND (OLD.status IS NOT NEW.status OR OLD.attempts IS NOT NEW.attempts
          OR OLD.error IS NOT NEW.error)
BEGIN
    INSERT INTO tether_run_events (run_id, kind, data) VALUES (NEW.run_id, 'op',
        json_object('position', NEW.position, 'kind', NEW.kind, 'name', NEW.name,
                    'status', NEW.status, 'attempts', NEW.attempts));
END;

CREATE TRIGGER tether_run_events_status AFTER UPDATE OF status ON tether_runs
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO tether_run_events (run_id, kind, data) VALUES (NEW.run_id, 'status',
        json_object('status', NEW.status, 'waiting_for', NEW.waiting_for));
END;

CREATE TRIGGER tether_run_events_live AFTER UPDATE OF status_info ON tether_runs
WHEN OLD.status_info IS NOT NEW.status_info
BEGIN
    INSERT INTO tether_run_events (run_id, kind, data) VALUES (NEW.run_id, 'live', NULL);
END;

CREATE TRIGGER tether_run_events_forget AFTER DELETE ON tether_runs
BEGIN
    DELETE FROM tether_run_events WHERE run_id = OLD.run_id;
END;
