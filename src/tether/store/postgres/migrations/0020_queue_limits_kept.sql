-- A pause's kept limit (0019) follows every change of a queue's limit, whoever's code
-- makes it: a limit other than 0 forgets it, and a pause of a queue that was not paused
-- keeps the limit it held. queue_limit_set already writes it so; earlier versions,
-- which do not name the column, set a limit on a paused queue without forgetting the
-- kept one, which a resume after a later pause (theirs keeping none) then gave back
-- instead of the last limit set. A trigger applies the rule to their statements too.
-- Only a row's update is concerned (an insert has none kept) and only when the limit is
-- in its SET list; the limits' rows change rarely (tether queue-limit, pause, resume).
CREATE OR REPLACE FUNCTION {schema}.queue_limits_kept() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.max_running <> 0 THEN
        NEW.limit_before_pause := NULL;
    ELSIF OLD.max_running <> 0 THEN
        NEW.limit_before_pause := OLD.max_running;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS queue_limits_kept ON {schema}.queue_limits;
CREATE TRIGGER queue_limits_kept BEFORE UPDATE OF max_running ON {schema}.queue_limits
FOR EACH ROW EXECUTE FUNCTION {schema}.queue_limits_kept();
