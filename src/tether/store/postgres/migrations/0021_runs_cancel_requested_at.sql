-- When a cancel was first asked of the run (tether cancel, the API, the web UI,
-- App.cancel, or its parent's cancel), set by the statement that sets cancel_requested
-- and kept by a repeat; NULL: none was, or one was asked by a version that does not
-- know the column. Read only while cancel_requested is set (a retry by such a version
-- clears the flag and leaves the time: the next cancel replaces it), and cleared by a
-- retry. tether show, the run document and the run page say how long the run has not
-- stopped since. Earlier versions neither read nor write it (their statements name
-- their columns). A nullable column without a default: a change of the catalogue
-- alone, no table rewrite.
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS cancel_requested_at double precision;
