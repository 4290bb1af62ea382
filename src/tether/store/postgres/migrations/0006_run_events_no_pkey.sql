-- The run events' primary key on event_id is used by no query: readers find a run's
-- events through run_events_run (run_id, txid, event_id), and forgetting a run's events
-- deletes by run_id. The sequence still hands out unique ids. Without the key every event
-- (three per run that parks on a timer, one per finished step) writes one index entry
-- instead of two: ~68 bytes less per waiting run, and one index insertion less in each
-- step's commit.
ALTER TABLE {schema}.run_events DROP CONSTRAINT run_events_pkey;
