-- A run event of kind 'cancel' when a cancel is requested of a run that does not end
-- with it (a waiting, sleeping, queued or running run: its status stays, and no status
-- event told an open run page, whose Cancel button stayed until the head's next
-- redraw). Its data is {"cancel_requested_at": T}. A repeat, and a cancel that ends the
-- run (a status event tells that), add none. A trigger of the column alone: no step's
-- statement sets it, so none runs it. The UPDATE that fires it holds the run's row, as
-- every writer of a run's events does (migration 0013). Earlier versions beside it get
-- the event for their cancels too, and their readers pass an event of a kind they do
-- not know on as it is (run_events_read builds only 's' and 'o').

CREATE OR REPLACE FUNCTION {schema}.run_events_cancel() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.run_events (run_id, kind, data) VALUES (NEW.run_id, 'cancel',
        json_build_object('cancel_requested_at', NEW.cancel_requested_at)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS run_events_cancel ON {schema}.runs;
CREATE TRIGGER run_events_cancel AFTER UPDATE OF cancel_requested ON {schema}.runs
FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested
                   AND NEW.status IS NOT DISTINCT FROM OLD.status)
EXECUTE FUNCTION {schema}.run_events_cancel();
