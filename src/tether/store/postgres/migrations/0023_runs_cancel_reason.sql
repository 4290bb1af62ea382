-- Why a cancel was asked of the run (cancel_reason: the text given to tether cancel
-- --reason, the API's {"reason"} or App.cancel's reason=; a child cancelled with its
-- parent gets its parent's) and whose cancel it was (cancelled_with: the id of the
-- parent whose cancel cascaded to the run; NULL: the run's own request). Set by the
-- statement that sets cancel_requested, and kept by a repeat, as cancel_requested_at
-- is; cleared by a retry. NULL both: no reason was given, or a version that does not
-- know the columns asked. Read by run_get alone (tether show, tether result, the run
-- document); no claim or step statement reads or writes them. Earlier versions
-- neither read nor write them (their statements name their columns). Nullable columns
-- without a default: a change of the catalogue alone, no table rewrite.
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS cancel_reason text;
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS cancelled_with text;
