-- The runs waiting for an approval (tether.ai: released on the signal `approval` alone,
-- waiting_for = 'signal approval'), oldest first by (created_at, run_id): what the
-- approvals inbox, `tether approvals` and GET /api/v1/approvals list (serve.sql,
-- run_list_awaiting_approval). They read the newest 10,000 waiting runs before and kept
-- the approvals among them: with more runs waiting on timers and other signals, older
-- approvals were not listed at all. Partial: only a run released onto the approval
-- signal adds an entry, so a start, a claim and every other release write nothing
-- more. Updates stay as HOT as they were: the releases and claims that change
-- waiting_for change status too, which runs_status indexes already.
CREATE INDEX runs_awaiting_approval ON {schema}.runs (created_at, run_id)
    WHERE status = 'waiting' AND waiting_for = 'signal approval';
