-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the column nor write
-- it, every statement of theirs naming the columns it reads and writes. It is recorded
-- in tether_schema_compatible, so they keep opening the store during a rolling update;
-- see COMPATIBLE_MARK in _store.py.)
-- The limit a paused queue held before its pause (tether queue-pause, tether
-- queue-limit Q 0), which tether queue-resume restores; NULL: it had none (a resume
-- removes the row). Read only while max_running is 0: a limit set since (by a version
-- that does not know the column) makes it stale, and queue_limit_set clears it.
ALTER TABLE tether_queue_limits ADD COLUMN limit_before_pause INTEGER
    CHECK (limit_before_pause > 0);
