-- tether: compatible
-- (Earlier versions run beside this migration: their cancels get the event too, and
-- their readers pass an event of a kind they do not know on as it is, as run_events_read
-- passes every kind but 's' and 'o'. It is recorded in tether_schema_compatible, so they
-- keep opening the store during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- A run event of kind 'cancel' when a cancel is requested of a run that does not end
-- with it (a waiting, sleeping, queued or running run: its status stays, and no status
-- event told an open run page, whose Cancel button stayed until the head's next
-- redraw). Its data is {"cancel_requested_at": T}. A repeat, and a cancel that ends the
-- run (a status event tells that), add none. A trigger of the column alone: no step's
-- statement sets it, so none runs it. The event id is computed as in migration 0010.
CREATE TRIGGER tether_run_events_cancel AFTER UPDATE OF cancel_requested ON tether_runs
WHEN NEW.cancel_requested AND NOT OLD.cancel_requested AND NEW.status IS OLD.status
BEGIN
    INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (NEW.run_id,
        coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = NEW.run_id),
                 CAST(NEW.created_at * 1000000 AS INTEGER), 0) + 1,
        'cancel', json_object('cancel_requested_at', NEW.cancel_requested_at));
END;
