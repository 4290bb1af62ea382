-- tether: compatible
-- (Earlier versions run beside this migration: a trigger adds nothing they read or
-- write by name. It is recorded in tether_schema_compatible; see COMPATIBLE_MARK in
-- _store.py.)
-- A pause's kept limit (0019) follows every change of a queue's limit, whoever's code
-- makes it: a limit other than 0 forgets it, and a pause of a queue that was not paused
-- keeps the limit it held. queue_limit_set already writes it so (the trigger's WHEN
-- then holds no more: nothing more is written); earlier versions, which do not name the
-- column, set a limit on a paused queue without forgetting the kept one, which a resume
-- after a later pause (theirs keeping none) then gave back instead of the last limit set.
CREATE TRIGGER tether_queue_limits_kept AFTER UPDATE OF max_running ON tether_queue_limits
WHEN (NEW.max_running <> 0 AND NEW.limit_before_pause IS NOT NULL)
     OR (NEW.max_running = 0 AND OLD.max_running <> 0
         AND NEW.limit_before_pause IS NOT OLD.max_running)
BEGIN
    UPDATE tether_queue_limits
    SET limit_before_pause = CASE WHEN NEW.max_running <> 0 THEN NULL
                                  ELSE OLD.max_running END
    WHERE queue = NEW.queue;
END;
