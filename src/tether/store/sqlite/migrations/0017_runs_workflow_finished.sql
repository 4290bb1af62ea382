-- tether: compatible
-- (Earlier versions run beside this migration: they neither read the index nor need to
-- know it. It is recorded in tether_schema_compatible, so they keep opening the store
-- during a rolling update; see COMPATIBLE_MARK in _store.py.)
-- The ended runs of one workflow, oldest first: what retention per workflow purges
-- (@app.workflow(retention=...), the app's policy less the workflows with their own,
-- `tether purge --workflow`; lifecycle.sql, purge_candidates_of). Without it the purge
-- of one workflow walked tether_runs_finished through every other workflow's older
-- runs: 1.2 M runs, a chat workflow kept 7 days beside an audit workflow kept a year,
-- 2.7 s a turn holding the single writer; with it 0.1 ms. Partial as
-- tether_runs_finished: a run's end writes one entry, nothing before.
CREATE INDEX tether_runs_workflow_finished ON tether_runs (workflow, finished_at)
    WHERE finished_at IS NOT NULL;
