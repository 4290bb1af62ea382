-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the index nor need to
-- know it. It is recorded in tether_schema_compatible, so they keep opening the store
-- during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- The runs waiting for an approval (tether.ai: released on the signal `approval` alone,
-- waiting_for = 'signal approval'), oldest first by (created_at, run_id): what the
-- approvals inbox, `tether approvals` and GET /api/v1/approvals list (serve.sql,
-- run_list_awaiting_approval). Before, they read the newest 10,000 waiting runs and
-- kept the approvals among them, missing older ones. Partial: only a run released onto
-- the approval signal adds an entry.
CREATE INDEX tether_runs_awaiting_approval ON tether_runs (created_at, run_id)
    WHERE status = 'waiting' AND waiting_for = 'signal approval';
