-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the columns nor write
-- them, every statement of theirs naming the columns it reads and writes. It is
-- recorded in tether_schema_compatible, so they keep opening the store during a
-- rolling update; see COMPATIBLE_MARK in _store.py.)
-- Why a cancel was asked of the run (cancel_reason: the text given to tether cancel
-- --reason, the API's {"reason"} or App.cancel's reason=; a child cancelled with its
-- parent gets its parent's) and whose cancel it was (cancelled_with: the id of the
-- parent whose cancel cascaded to the run; NULL: the run's own request). Set by the
-- statement that sets cancel_requested, and kept by a repeat, as cancel_requested_at
-- is; cleared by a retry. NULL both: no reason was given, or a version that does not
-- know the columns asked. Read by run_get alone (tether show, tether result, the run
-- document); no claim or step statement reads or writes them.
ALTER TABLE tether_runs ADD COLUMN cancel_reason TEXT;
ALTER TABLE tether_runs ADD COLUMN cancelled_with TEXT;
