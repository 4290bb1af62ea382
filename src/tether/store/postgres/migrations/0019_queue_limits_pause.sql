-- The limit a paused queue held before its pause (tether queue-pause, tether
-- queue-limit Q 0), which tether queue-resume restores; NULL: it had none (a resume
-- removes the row). Read only while max_running is 0: a limit set since (by a version
-- that does not know the column) makes it stale, and queue_limit_set clears it. Earlier
-- versions neither read nor write it (their statements name their columns). A nullable
-- column without a default: a change of the catalogue alone, no table rewrite.
ALTER TABLE {schema}.queue_limits ADD COLUMN IF NOT EXISTS limit_before_pause integer
    CHECK (limit_before_pause > 0);
