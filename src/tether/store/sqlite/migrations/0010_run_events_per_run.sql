-- Run events (migration 0004) in one B-tree keyed by (run_id, event_id), event ids
-- counted per run. The journal's triggers write an event in the commit of every step:
-- with a rowid table, its index on (run_id, event_id) and AUTOINCREMENT's
-- sqlite_sequence row, that commit wrote 4.7 pages to the WAL instead of 1.3 (each one
-- part of the step's fsync); now it writes 2.7.
-- Events are read per run after a cursor, so ids need only grow within a run, in commit
-- order (SQLite has one writer). A run's first event id starts above its creation time
-- in microseconds: a run purged and started again under the same id gets ids above the
-- old ones, so a client's stale cursor cannot skip its new events. Events stored before
-- this migration keep their ids, and later ones continue above them.

CREATE TABLE tether_run_events_0010 (
    run_id     TEXT NOT NULL,
    event_id   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT,
    PRIMARY KEY (run_id, event_id)
) WITHOUT ROWID;
INSERT INTO tether_run_events_0010 (run_id, event_id, kind, data)
    SELECT run_id, event_id, kind, data FROM tether_run_events;

DROP TRIGGER tether_run_events_journal_insert;
DROP TRIGGER tether_run_events_journal_update;
DROP TRIGGER tether_run_events_status;
DROP TRIGGER tether_run_events_live;
DROP TRIGGER tether_run_events_forget;
DROP TABLE tether_run_events;
DELETE FROM sqlite_sequence WHERE name = 'tether_run_events';
ALTER TABLE tether_run_events_0010 RENAME TO tether_run_events;

-- The next event id of a run: one more than its last, or than its creation time in µs.
CREATE TRIGGER tether_run_events_journal_insert AFTER INSERT ON tether_journal
WHEN NEW.status <> 'pending' OR NEW.error IS NOT NULL
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 (SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs
                  WHERE run_id = NEW.run_id), 0) + 1,
        'op', json_object('position', NEW.position, 'kind', NEW.kind, 'name', NEW.name,
                          'status', NEW.status, 'attempts', NEW.attempts));
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
        'op', json_object('position', NEW.position, 'kind', NEW.kind, 'name', NEW.name,
                          'status', NEW.status, 'attempts', NEW.attempts));
END;

CREATE TRIGGER tether_run_events_status AFTER UPDATE OF status ON tether_runs
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 CAST(NEW.created_at * 1000000 AS INTEGER), 0) + 1,
        'status', json_object('status', NEW.status, 'waiting_for', NEW.waiting_for));
END;

CREATE TRIGGER tether_run_events_live AFTER UPDATE OF status_info ON tether_runs
WHEN OLD.status_info IS NOT NEW.status_info
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 CAST(NEW.created_at * 1000000 AS INTEGER), 0) + 1,
        'live', NULL);
END;

CREATE TRIGGER tether_run_events_forget AFTER DELETE ON tether_runs
BEGIN
    DELETE FROM tether_run_events WHERE run_id = OLD.run_id;
END;
