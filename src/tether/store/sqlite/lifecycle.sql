-- Queries for runs over their whole life (migration 0003): attempts, retry, fork,
-- continue-as-new, versions, schedules and retention.

-- attempt_list --
-- A run's attempts, in the order they started: the rows written, and the first attempts
-- that succeeded before any state of them was written (migration 0012): a step entry
-- that succeeded at attempt 1, with no row of an attempt that started when the entry
-- says, is that attempt, run by the worker that held the entry's lease. (An attempt whose
-- entry was lost keeps its row, with an earlier start. A fork's copied entries have
-- token 0, which no claim gives, so they are not attempts of the fork.)
SELECT * FROM (
    SELECT attempt_id, run_id, generation, position, name, attempt, worker_id, status,
           started_at, finished_at, error
    FROM tether_attempts WHERE run_id = :run_id
    UNION ALL
    SELECT j.run_id || '@' || j.generation || '.' || j.position, j.run_id, j.generation,
           j.position, j.name, 1, l.worker_id, 'ok', j.started_at, j.finished_at, NULL
    FROM (SELECT c.run_id, r.generation, c.position, c.name, c.started_at, c.finished_at,
                 c.fencing_token
          FROM tether_journal c JOIN tether_runs r ON r.run_id = c.run_id
          WHERE c.run_id = :run_id AND c.kind = 'step' AND c.status = 'ok' AND c.attempts = 1
            AND c.started_at IS NOT NULL
          UNION ALL
          SELECT run_id, generation, position, name, started_at, finished_at, fencing_token
          FROM tether_journal_archive
          WHERE run_id = :run_id AND kind = 'step' AND status = 'ok' AND attempts = 1
            AND started_at IS NOT NULL) j
    JOIN tether_leases l ON l.run_id = j.run_id AND l.fencing_token = j.fencing_token
    WHERE NOT EXISTS (SELECT 1 FROM tether_attempts a
                      WHERE a.run_id = j.run_id AND a.generation = j.generation
                        AND a.position = j.position AND a.started_at = j.started_at))
ORDER BY generation, position, started_at, attempt;

-- run_retry --
-- A failed, blocked or cancelled run becomes runnable again.
UPDATE tether_runs
SET status = 'queued', result = NULL, error = NULL, finished_at = NULL, owner = NULL,
    available_at = :now, updated_at = :now, cancel_requested = 0,
    cancel_requested_at = NULL, cancel_reason = NULL, cancelled_with = NULL,
    waiting_for = NULL, wait_signal = NULL, wait_child = NULL,
    version = :version, crashes = 0, crashes_seen = 0, crash_progress = NULL
WHERE run_id = :run_id AND status IN ('failed', 'blocked', 'cancelled');

-- run_children_of --
-- A retried run's children, for the rule of children_to_retry.
SELECT run_id, parent_position, status, on_parent_cancel, erased_at FROM tether_runs
WHERE parent_run_id = :run_id ORDER BY run_id;

-- journal_delete_at --
-- Forget one journal entry.
DELETE FROM tether_journal WHERE run_id = :run_id AND position = :position;

-- journal_restore_timer_at --
-- A cancel entry that took a timer's place becomes that timer again, pending, with the
-- start, deadline and result it kept (a retried run waits only for what was left).
UPDATE tether_journal SET kind = 'sleep', name = 'sleep', status = 'pending',
    finished_at = NULL
WHERE run_id = :run_id AND position = :position AND kind = 'cancel';

-- journal_reset_at --
-- A failed step runs again with a fresh attempt count (its last error stays visible).
UPDATE tether_journal
SET status = 'pending', attempts = 0, next_attempt_at = NULL, finished_at = NULL,
    started_at = NULL
WHERE run_id = :run_id AND position = :position;

-- journal_copy --
-- A fork's journal: the source's entries before a position.
INSERT INTO tether_journal (run_id, position, kind, name, status, result, error, attempts,
                            started_at, finished_at, next_attempt_at, args, fencing_token)
SELECT :run_id, position, kind, name, status, result, error, attempts, started_at,
       finished_at, next_attempt_at, args, 0
FROM tether_journal WHERE run_id = :source_run_id AND position < :position;

-- journal_insert --
-- A fork's journal entry, given (its payloads encoded again for the fork).
INSERT INTO tether_journal (run_id, position, kind, name, status, result, error, attempts,
                            started_at, finished_at, next_attempt_at, args, fencing_token)
VALUES (:run_id, :position, :kind, :name, :status, :result, :error, :attempts,
        :started_at, :finished_at, :next_attempt_at, :args, 0);

-- journal_archive --
-- Keep a generation's journal when the run continues as new.
INSERT INTO tether_journal_archive (run_id, generation, position, kind, name, status,
                                    result, error, attempts, started_at, finished_at,
                                    next_attempt_at, args, input, fencing_token)
SELECT j.run_id, r.generation, j.position, j.kind, j.name, j.status, j.result, j.error,
       j.attempts, j.started_at, j.finished_at, j.next_attempt_at, j.args,
       CASE WHEN j.position = 0 THEN r.input END, j.fencing_token
FROM tether_journal j JOIN tether_runs r ON r.run_id = j.run_id WHERE j.run_id = :run_id;

-- journal_clear --
-- Empty a run's journal.
DELETE FROM tether_journal WHERE run_id = :run_id;

-- run_continue --
-- The run continues as new: next generation, new input, runnable at once.
UPDATE tether_runs
SET status = 'queued', input = :input, generation = generation + 1, owner = NULL,
    available_at = :now, updated_at = :now, waiting_for = NULL, wait_signal = NULL,
    wait_child = NULL, status_info = NULL
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- journal_archive_read --
-- A run's archived journals.
SELECT generation, position, kind, name, status, result, error, attempts, started_at,
       finished_at, next_attempt_at, args, input
FROM tether_journal_archive WHERE run_id = :run_id ORDER BY generation, position;

-- run_versions --
-- Runs per code version and status.
SELECT version, status, count(*) FROM tether_runs GROUP BY version, status
ORDER BY version, status;

-- run_version_candidates --
-- Unfinished runs of a version.
SELECT run_id, workflow FROM tether_runs
WHERE version = :version AND status NOT IN ('completed', 'failed', 'cancelled') ORDER BY run_id;

-- run_version_set --
-- Move one unfinished run to another version (not while a worker holds it).
UPDATE tether_runs SET version = :to_version, updated_at = :now
WHERE run_id = :run_id AND version = :from_version AND status NOT IN ('completed', 'failed', 'cancelled', 'running');

-- schedule_upsert --
-- Create or redefine a schedule (its pause state and last tick are kept).
INSERT INTO tether_schedules (name, workflow, queue, cron, timezone, input, overlap, catchup,
                              catchup_max, paused, next_tick, version, created_at, updated_at)
VALUES (:name, :workflow, :queue, :cron, :timezone, :input, :overlap, :catchup, :catchup_max,
        0, :next_tick, :version, :updated_at, :updated_at)
ON CONFLICT (name) DO UPDATE SET
    workflow = excluded.workflow, queue = excluded.queue, input = excluded.input,
    overlap = excluded.overlap, catchup = excluded.catchup,
    catchup_max = excluded.catchup_max, version = excluded.version,
    updated_at = excluded.updated_at,
    next_tick = CASE WHEN tether_schedules.cron = excluded.cron
                      AND tether_schedules.timezone = excluded.timezone
                     THEN tether_schedules.next_tick ELSE excluded.next_tick END,
    cron = excluded.cron, timezone = excluded.timezone;

-- schedule_list --
-- Every schedule.
SELECT name, workflow, queue, cron, timezone, input, overlap, catchup, catchup_max, paused,
       next_tick, last_tick, last_run_id, version, created_at, updated_at
FROM tether_schedules ORDER BY name;

-- schedule_get --
-- One schedule.
SELECT name, workflow, queue, cron, timezone, input, overlap, catchup, catchup_max, paused,
       next_tick, last_tick, last_run_id, version, created_at, updated_at
FROM tether_schedules WHERE name = :name;

-- schedule_pause --
-- Pause or resume a schedule; resuming sets the next tick.
UPDATE tether_schedules
SET paused = :paused, updated_at = :now, next_tick = coalesce(:next_tick, next_tick)
WHERE name = :name;

-- schedule_delete --
-- Forget a schedule (its runs stay).
DELETE FROM tether_schedules WHERE name = :name;

-- schedule_advance --
-- Move a schedule's next tick on, only if no other worker did it first.
UPDATE tether_schedules
SET next_tick = :next_tick, last_tick = coalesce(:last_tick, last_tick),
    last_run_id = coalesce(:last_run_id, last_run_id), updated_at = :now
WHERE name = :name AND next_tick IS :expected;

-- purge_candidates --
-- Finished runs older than a time, of some statuses (JSON array), oldest first; not a
-- run with an unfinished child, nor a child whose parent has not ended (it may still
-- read the child's outcome).
SELECT run_id FROM tether_runs
WHERE finished_at IS NOT NULL AND finished_at < :finished_before
  AND status IN (SELECT value FROM json_each(:statuses))
  AND NOT EXISTS (SELECT 1 FROM tether_runs c WHERE c.parent_run_id = tether_runs.run_id
                  AND c.status NOT IN ('completed', 'failed', 'cancelled'))
  AND NOT EXISTS (SELECT 1 FROM tether_runs p WHERE p.run_id = tether_runs.parent_run_id
                  AND p.status NOT IN ('completed', 'failed', 'cancelled'))
ORDER BY finished_at LIMIT :limit;

-- purge_candidates_of --
-- purge_candidates, of some workflows only (JSON array): a workflow's own retention,
-- `tether purge --workflow`. By workflow, then oldest first: what
-- tether_runs_workflow_finished (migration 0017) gives in its order, so that a batch
-- reads no more than it takes; ordered by finished_at alone it walked
-- tether_runs_finished through every other workflow's older runs.
SELECT run_id FROM tether_runs
WHERE workflow IN (SELECT value FROM json_each(:workflows))
  AND finished_at IS NOT NULL AND finished_at < :finished_before
  AND status IN (SELECT value FROM json_each(:statuses))
  AND NOT EXISTS (SELECT 1 FROM tether_runs c WHERE c.parent_run_id = tether_runs.run_id
                  AND c.status NOT IN ('completed', 'failed', 'cancelled'))
  AND NOT EXISTS (SELECT 1 FROM tether_runs p WHERE p.run_id = tether_runs.parent_run_id
                  AND p.status NOT IN ('completed', 'failed', 'cancelled'))
ORDER BY workflow, finished_at LIMIT :limit;

-- purge_workflow_first --
-- The first workflow with an ended run; with purge_workflow_after, the workflows of the
-- store one index probe each (tether_runs_workflow_finished), for the app's retention
-- less the workflows with their own (run_purge's exclude).
SELECT workflow FROM tether_runs WHERE finished_at IS NOT NULL ORDER BY workflow LIMIT 1;

-- purge_workflow_after --
-- The next workflow after :after with an ended run.
SELECT workflow FROM tether_runs WHERE finished_at IS NOT NULL AND workflow > :after
ORDER BY workflow LIMIT 1;

-- lease_check --
-- Whether a lease is current (continue-as-new is a fenced write).
SELECT 1 FROM tether_runs
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- purge_step_durations --
-- Purge: the name of each finished step of the runs (a JSON array) and how long it took,
-- all generations (kept in tether_metric_totals: /metrics' step histograms never go
-- down); not a fork's entries copied from its source (token 0), which stats_steps never
-- counted.
SELECT name, finished_at - started_at FROM tether_journal
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'step'
  AND status <> 'pending' AND started_at IS NOT NULL AND finished_at IS NOT NULL
  AND fencing_token IS NOT 0
UNION ALL
SELECT name, finished_at - started_at FROM tether_journal_archive
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'step'
  AND status <> 'pending' AND started_at IS NOT NULL AND finished_at IS NOT NULL
  AND fencing_token IS NOT 0;

-- journal_copied_positions --
-- A fork's entries copied from its source (token 0: see retry_plan).
SELECT position FROM tether_journal WHERE run_id = :run_id AND fencing_token = 0;

-- purge_run_metrics --
-- Purge: the metrics of the runs (a JSON array), for tether_metric_totals.
SELECT metrics FROM tether_runs
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND metrics IS NOT NULL;

-- purge_run_ends --
-- Purge: the workflow, status and seconds from creation to end of the runs (a JSON
-- array), for tether_metric_totals (run_end_totals_of counts the ended ones).
SELECT workflow, status, coalesce(finished_at, created_at) - created_at FROM tether_runs
WHERE run_id IN (SELECT value FROM json_each(:run_ids));

-- metric_totals_add --
-- Purge: add what the purged runs counted for to the cumulative figures of /metrics.
INSERT INTO tether_metric_totals (name, value) VALUES (:name, :value)
ON CONFLICT (name) DO UPDATE SET value = value + excluded.value;

-- purge_journal_attempts --
-- Purge: the runs' (a JSON array) first attempts that have no row, their journal
-- entries their record (attempt_list lists them): deleted with the entries, and counted
-- as attempts, as PostgreSQL, which writes a row for each, counts them.
SELECT count(*)
FROM (SELECT c.run_id, r.generation, c.position, c.started_at, c.fencing_token
      FROM tether_runs r JOIN tether_journal c ON c.run_id = r.run_id
      WHERE r.run_id IN (SELECT value FROM json_each(:run_ids))
        AND c.kind = 'step' AND c.status = 'ok' AND c.attempts = 1
        AND c.started_at IS NOT NULL
      UNION ALL
      SELECT run_id, generation, position, started_at, fencing_token
      FROM tether_journal_archive
      WHERE run_id IN (SELECT value FROM json_each(:run_ids))
        AND kind = 'step' AND status = 'ok' AND attempts = 1
        AND started_at IS NOT NULL) j
JOIN tether_leases l ON l.run_id = j.run_id AND l.fencing_token = j.fencing_token
WHERE NOT EXISTS (SELECT 1 FROM tether_attempts a
                  WHERE a.run_id = j.run_id AND a.generation = j.generation
                    AND a.position = j.position AND a.started_at = j.started_at);

-- run_delete_journal --
-- Purge: a run's journal entries.
DELETE FROM tether_journal WHERE run_id = :run_id;

-- run_delete_archive --
-- Purge: a run's archived journals.
DELETE FROM tether_journal_archive WHERE run_id = :run_id;

-- run_delete_attempts --
-- Purge: a run's attempts.
DELETE FROM tether_attempts WHERE run_id = :run_id;

-- run_delete_signals --
-- Purge: a run's signals.
DELETE FROM tether_signals WHERE run_id = :run_id;

-- run_delete_kv --
-- Purge: the shared values that belong to the runs (keys: a JSON array).
DELETE FROM tether_kv WHERE key IN (SELECT value FROM json_each(:keys));

-- run_delete --
-- Purge: the run itself (after its rows above).
DELETE FROM tether_runs WHERE run_id = :run_id;

-- run_family_next --
-- Erase: the children and forks of these runs (a JSON array of ids), with their
-- statuses; one level of a run's family (tether_runs_parent, tether_runs_forked_from).
SELECT run_id, status FROM tether_runs
WHERE parent_run_id IN (SELECT value FROM json_each(:run_ids))
UNION
SELECT run_id, status FROM tether_runs
WHERE forked_from IN (SELECT value FROM json_each(:run_ids));

-- erase_unerased --
-- Erase: how many of these runs (a JSON array of ids) were never erased.
SELECT count(*) FROM tether_runs
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND erased_at IS NULL;

-- erase_run --
-- Erase: the runs' payloads (a JSON array of ids) become the marker; their shape and
-- times stay, and so does the time of a run's first erase.
UPDATE tether_runs
SET input = :marker, result = CASE WHEN result IS NULL THEN NULL ELSE :marker END,
    error = CASE WHEN error IS NULL THEN NULL ELSE :marker END,
    status_info = NULL, erased_at = COALESCE(erased_at, :now), updated_at = :now
WHERE run_id IN (SELECT value FROM json_each(:run_ids));

-- erase_journal --
-- Erase: the payloads of the runs' journal entries.
UPDATE tether_journal
SET result = CASE WHEN result IS NULL THEN NULL ELSE :marker END,
    error = CASE WHEN error IS NULL THEN NULL ELSE :marker END,
    args = CASE WHEN args IS NULL THEN NULL ELSE :marker END
WHERE run_id IN (SELECT value FROM json_each(:run_ids));

-- erase_archive --
-- Erase: the payloads of the runs' archived journals.
UPDATE tether_journal_archive
SET result = CASE WHEN result IS NULL THEN NULL ELSE :marker END,
    error = CASE WHEN error IS NULL THEN NULL ELSE :marker END,
    args = CASE WHEN args IS NULL THEN NULL ELSE :marker END
WHERE run_id IN (SELECT value FROM json_each(:run_ids));

-- erase_archive_inputs --
-- Erase: the inputs kept with archived journals.
UPDATE tether_journal_archive SET input = :marker
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND input IS NOT NULL;

-- erase_attempts --
-- Erase: the errors of the runs' attempts.
UPDATE tether_attempts SET error = :marker
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND error IS NOT NULL;

-- erase_signals --
-- Erase: the payloads of the runs' signals.
UPDATE tether_signals SET payload = :marker
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND payload IS NOT NULL;

-- erase_events --
-- Erase: the events the runs published (streamed LLM text, kept for serve's resumable
-- streams); the timeline's events (operations, statuses) stay.
DELETE FROM tether_run_events
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'chunk';

-- blob_ref_put --
-- The run references these texts (a JSON object keyed by digest); written before the
-- texts, in their transaction.
INSERT OR IGNORE INTO tether_blob_refs (key, run_id) SELECT key, ?2 FROM json_each(?1);

-- blob_refs_copy --
-- A fork references every text its source does.
INSERT OR IGNORE INTO tether_blob_refs (key, run_id)
SELECT key, ?1 FROM tether_blob_refs WHERE run_id = ?2;

-- blob_refs_of --
-- The keys a run references.
SELECT key FROM tether_blob_refs WHERE run_id = ?;

-- blob_refs_delete --
-- Forget what a run references.
DELETE FROM tether_blob_refs WHERE run_id = ?;

-- blob_sweep --
-- Delete the texts of these keys (a JSON array) that no run references any more.
DELETE FROM tether_blobs
WHERE key IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM tether_blob_refs r WHERE r.key = tether_blobs.key);

-- run_crash_mark --
-- Record a takeover's crash count (acknowledged) and journal progress, under the
-- taker's lease.
UPDATE tether_runs SET crashes = ?3, crashes_seen = ?3, crash_progress = ?4
WHERE run_id = ?1 AND fencing_token = ?2 AND status = 'running';
