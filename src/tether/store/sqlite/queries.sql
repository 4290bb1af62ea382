-- schema_tables --
-- The names of the file's tables (an empty list: a new store).
SELECT name FROM sqlite_master WHERE type = 'table';

-- schema_applied --
-- The versions of the migrations applied to the file.
SELECT version FROM tether_schema_version;

-- schema_version_create --
-- The table of applied migrations (the first migration's transaction creates it).
CREATE TABLE IF NOT EXISTS tether_schema_version
    (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);

-- schema_version_insert --
-- Record one migration as applied.
INSERT INTO tether_schema_version VALUES (:version, :name, :applied_at);

-- schema_compatible_applied --
-- The versions of the applied migrations that earlier versions run beside (marked
-- "-- tether: compatible"): kept out of tether_schema_version, where earlier versions
-- refuse any version they do not know.
SELECT version FROM tether_schema_compatible;

-- schema_compatible_create --
CREATE TABLE IF NOT EXISTS tether_schema_compatible
    (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);

-- schema_compatible_insert --
INSERT INTO tether_schema_compatible VALUES (:version, :name, :applied_at);

-- run_insert --
-- Insert a run unless one with its id exists (start is idempotent on run_id).
INSERT INTO tether_runs (run_id, workflow, queue, status, input, created_at, updated_at,
                         available_at, parent_run_id, parent_position, on_parent_cancel,
                         version, forked_from, forked_at)
VALUES (:run_id, :workflow, :queue, :status, :input, :created_at, :updated_at,
        :available_at, :parent_run_id, :parent_position, :on_parent_cancel,
        :version, :forked_from, :forked_at)
ON CONFLICT (run_id) DO NOTHING;

-- run_get --
-- One run by id, every column (the crash counts of migration 0005, then the time a
-- cancel was requested, its reason and whose cancel it was: _sql.run_from_row).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at,
       crashes, crashes_seen, crash_progress, cancel_requested_at,
       cancel_reason, cancelled_with
FROM tether_runs WHERE run_id = :run_id;

-- _list_branch --
-- run_list_all's and run_list_unsettled's branch of one status (written once per status by
-- the loader: {_x|a,b}).
SELECT * FROM (SELECT * FROM tether_runs WHERE status = '{status}' ORDER BY created_at DESC, run_id LIMIT :limit)

-- run_list_all --
-- Runs, newest first: the newest of each status through tether_runs_status (status,
-- created_at), merged (as serve.sql's run_search_all: no ordered scan of every run).
-- The statuses are RunStatus's, all of them.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_list_branch|queued,running,waiting,completed,failed,cancelled,blocked})
ORDER BY created_at DESC, run_id LIMIT :limit;

-- run_list_unsettled --
-- The queued, running and waiting runs, newest first, in one statement (one snapshot):
-- the newest of each status through tether_runs_status, merged.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_list_branch|queued,running,waiting})
ORDER BY created_at DESC, run_id LIMIT :limit;

-- run_list --
-- Runs, newest first, optionally of one status.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM tether_runs WHERE (:status IS NULL OR status = :status)
ORDER BY created_at DESC, run_id LIMIT :limit;

-- journal_read --
-- A run's journal in position order.
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT position, kind, name, status, result, error, attempts, started_at, finished_at,
       next_attempt_at, args
FROM tether_journal WHERE run_id = +:run_id ORDER BY position;

-- journal_read_many --
-- The journals of the runs of the ids given as a JSON array, each in position order.
SELECT run_id, position, kind, name, status, result, error, attempts, started_at,
       finished_at, next_attempt_at, args
FROM tether_journal WHERE run_id IN (SELECT value FROM json_each(:run_ids))
ORDER BY run_id, position;

-- journal_append --
-- Record one operation's outcome; writes nothing if the caller's lease was taken over,
-- and never overwrites a final entry.
INSERT INTO tether_journal (run_id, position, kind, name, status, result, error, attempts,
                            started_at, finished_at, next_attempt_at, args, fencing_token)
SELECT :run_id, :position, :kind, :name, :status, :result, :error, :attempts,
       :started_at, :finished_at, :next_attempt_at, :args, :fencing_token
WHERE EXISTS (SELECT 1 FROM tether_runs
              WHERE run_id = :run_id AND fencing_token = :fencing_token
                AND status = 'running')
ON CONFLICT (run_id, position) DO UPDATE SET
    kind = excluded.kind, name = excluded.name,
    status = excluded.status, result = excluded.result, error = excluded.error,
    attempts = excluded.attempts, finished_at = excluded.finished_at,
    next_attempt_at = excluded.next_attempt_at, fencing_token = excluded.fencing_token,
    -- (a step reset by a retry has none: its first new attempt's)
    started_at = coalesce(tether_journal.started_at, excluded.started_at)
WHERE tether_journal.status = 'pending';

-- journal_written --
-- The entry at this position if this fencing token wrote it: a retried append whose
-- first attempt committed finds its own entry here (read only when an append was
-- refused under a current lease).
SELECT position, kind, name, status, result, error, attempts, started_at, finished_at,
       next_attempt_at, args
FROM tether_journal
WHERE run_id = :run_id AND position = :position AND fencing_token = :fencing_token;

-- lease_check --
-- Whether a lease is current.
SELECT 1 FROM tether_runs
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- run_status --
-- A run's status (the one a run_finish just wrote: cancelled for a blocked end whose
-- cancel was pending).
SELECT status FROM tether_runs WHERE run_id = :run_id;

-- run_wake_waiters --
-- A run ended: runs waiting for it as a child become claimable.
UPDATE tether_runs SET available_at = :now, updated_at = :now
WHERE wait_child = :run_id AND status = 'waiting';

-- run_wake_listed --
-- A run ended: its parent, if it waits for it among several children (wait_child in
-- the list form of wait_names: char(31) before and after each id), becomes claimable.
UPDATE tether_runs SET available_at = :now, updated_at = :now
WHERE run_id = (SELECT parent_run_id FROM tether_runs WHERE run_id = :run_id)
  AND status = 'waiting' AND instr(wait_child, char(31) || :run_id || char(31)) > 0;

-- run_release --
-- Hand a run back to wait; claimable at once if what it waits for already happened.
UPDATE tether_runs
SET status = 'waiting', owner = NULL, waiting_for = :waiting_for, updated_at = :now,
    wait_signal = :wait_signal, wait_child = :wait_child,
    available_at = CASE
        WHEN cancel_requested THEN :now
        WHEN :wait_signal IS NOT NULL AND EXISTS (
            SELECT 1 FROM tether_signals s
            WHERE s.run_id = :run_id AND s.name = :wait_signal
              AND s.consumed_position IS NULL) THEN :now
        WHEN :wait_child IS NOT NULL AND EXISTS (
            SELECT 1 FROM tether_runs c
            WHERE c.run_id = :wait_child
              AND c.status IN ('completed', 'failed', 'cancelled')) THEN :now
        ELSE :available_at END
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- run_resume --
-- An operator makes a blocked run claimable again.
UPDATE tether_runs SET status = 'queued', available_at = :now, updated_at = :now, error = NULL
WHERE run_id = :run_id AND status = 'blocked' AND erased_at IS NULL;

-- run_set_status_info --
-- Publish a run's live status under the caller's lease.
UPDATE tether_runs SET status_info = :info, updated_at = :now
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- signal_insert --
-- Store a signal; a repeated idempotency key stores nothing.
INSERT INTO tether_signals (run_id, name, payload, idempotency_key, created_at)
VALUES (:run_id, :name, :payload, :idempotency_key, :now)
ON CONFLICT (run_id, idempotency_key) DO NOTHING;

-- signal_find_key --
-- The signal stored under an idempotency key.
SELECT signal_id, name, payload FROM tether_signals
WHERE run_id = :run_id AND idempotency_key = :idempotency_key;

-- signal_wake --
-- A run waiting for this signal (alone, or among several: the list form of wait_names)
-- becomes claimable.
UPDATE tether_runs SET available_at = :now, updated_at = :now
WHERE run_id = :run_id AND status = 'waiting'
  AND (wait_signal = :name OR instr(wait_signal, char(31) || :name || char(31)) > 0);

-- signal_oldest --
-- The oldest pending signal of a name.
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT signal_id, payload FROM tether_signals
WHERE run_id = +:run_id AND name = +:name AND consumed_position IS NULL
ORDER BY signal_id LIMIT 1;

-- signal_oldest_sent_by --
-- The oldest pending signal of a name sent at or before a time (a wait's deadline, once
-- it has passed: one sent after it stays pending, the wait has timed out).
SELECT signal_id, payload FROM tether_signals
WHERE run_id = +:run_id AND name = +:name AND consumed_position IS NULL
  AND created_at <= :sent_by
ORDER BY signal_id LIMIT 1;

-- signal_consume --
-- Mark a signal consumed by the wait at a position.
UPDATE tether_signals SET consumed_position = :position WHERE signal_id = :signal_id;

-- run_children_end --
-- A run's children whose policy is cancel and that have no code that could observe a
-- cancel end cancelled at once (as run_cancel_blocked): blocked ones, and queued ones
-- that never started (no journal entry: e.g. a durable tool on a queue no worker serves).
UPDATE tether_runs
SET status = 'cancelled', cancel_requested = 1, updated_at = :now,
    cancel_requested_at = CASE WHEN cancel_requested
                               THEN coalesce(cancel_requested_at, :now)
                               ELSE :now END,
    cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                         ELSE (SELECT p.cancel_reason FROM tether_runs p
                               WHERE p.run_id = :parent_run_id) END,
    cancelled_with = CASE WHEN cancel_requested THEN cancelled_with
                          ELSE :parent_run_id END, finished_at = :now,
    owner = NULL, available_at = NULL
WHERE parent_run_id = :parent_run_id AND on_parent_cancel = 'cancel'
  AND (status = 'blocked'
       OR (status = 'queued'
           AND NOT EXISTS (SELECT 1 FROM tether_journal j
                           WHERE j.run_id = tether_runs.run_id)))
RETURNING run_id, status;

-- run_children_cancel --
-- Ask a run's other unfinished children whose policy is cancel to cancel (after
-- run_children_end); a queued or waiting one becomes claimable now, to see it.
UPDATE tether_runs
SET cancel_requested = 1, updated_at = :now,
    cancel_requested_at = CASE WHEN cancel_requested
                               THEN coalesce(cancel_requested_at, :now)
                               ELSE :now END,
    cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                         ELSE (SELECT p.cancel_reason FROM tether_runs p
                               WHERE p.run_id = :parent_run_id) END,
    cancelled_with = CASE WHEN cancel_requested THEN cancelled_with
                          ELSE :parent_run_id END,
    available_at = CASE WHEN status IN ('queued', 'waiting') THEN :now ELSE available_at END
WHERE parent_run_id = :parent_run_id AND on_parent_cancel = 'cancel'
  AND status NOT IN ('completed', 'failed', 'cancelled')
RETURNING run_id, status;

-- run_cancel --
-- Ask a run to cancel; a queued or waiting run becomes claimable now. The time of the
-- request (cancel_requested_at) is the first's: a repeat keeps it (one a retry left
-- with the flag cleared is replaced); so is each run_children_* and run_cancel_blocked.
-- So are its reason (cancel_reason) and whose cancel it was (cancelled_with: NULL for
-- the run's own request; run_children_* give a child its parent's id and reason).
UPDATE tether_runs
SET cancel_requested = 1, updated_at = :now,
    cancel_requested_at = CASE WHEN cancel_requested
                               THEN coalesce(cancel_requested_at, :now)
                               ELSE :now END,
    cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                         ELSE :reason END,
    cancelled_with = CASE WHEN cancel_requested THEN cancelled_with END,
    available_at = CASE WHEN status IN ('queued', 'waiting') THEN :now ELSE available_at END
WHERE run_id = :run_id AND status NOT IN ('completed', 'failed', 'cancelled');

-- run_cancel_blocked --
-- A blocked run, or a queued one that never started (no journal entry: none of its code
-- ran, e.g. of a workflow no worker has), has no code that could observe a cancel: end
-- it at once.
UPDATE tether_runs
SET status = 'cancelled', cancel_requested = 1, updated_at = :now,
    cancel_requested_at = CASE WHEN cancel_requested
                               THEN coalesce(cancel_requested_at, :now)
                               ELSE :now END,
    cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                         ELSE :reason END,
    cancelled_with = CASE WHEN cancel_requested THEN cancelled_with END, finished_at = :now,
    owner = NULL, available_at = NULL
WHERE run_id = :run_id
  AND (status = 'blocked'
       OR (status = 'queued'
           AND NOT EXISTS (SELECT 1 FROM tether_journal j WHERE j.run_id = :run_id)));

-- lease_heartbeat --
-- Extend every lease a worker holds; report which it still holds.
UPDATE tether_runs SET available_at = :lease_expires
WHERE owner = :worker_id AND status = 'running'
RETURNING run_id, cancel_requested;

-- worker_touch --
-- Mark a worker alive.
UPDATE tether_workers SET heartbeat_at = :now WHERE worker_id = :worker_id;

-- lease_expire_owner --
-- Make a dead worker's runs claimable at once; their ids.
UPDATE tether_runs SET available_at = :now WHERE owner = :worker_id AND status = 'running'
RETURNING run_id;

-- worker_register --
-- Record a live worker.
INSERT OR REPLACE INTO tether_workers
    (worker_id, hostname, pid, pid_start, queues, started_at, heartbeat_at)
VALUES (:worker_id, :hostname, :pid, :pid_start, :queues, :started_at, :heartbeat_at);

-- worker_delete --
-- Forget a worker.
DELETE FROM tether_workers WHERE worker_id = :worker_id;

-- worker_release_runs --
-- A stopping worker hands its runs back to the queue.
UPDATE tether_runs SET status = 'queued', owner = NULL, available_at = :now, updated_at = :now
WHERE owner = :worker_id AND status = 'running';

-- worker_list --
-- Known workers.
SELECT worker_id, hostname, pid, pid_start, queues, started_at, heartbeat_at
FROM tether_workers ORDER BY started_at;

-- worker_runs_held --
-- How many running runs each worker holds (tether_runs_owner: only runs with an owner).
SELECT owner, count(*) FROM tether_runs
WHERE owner IS NOT NULL AND status = 'running' GROUP BY owner;

-- workflow_register --
-- Record a workflow name and its queue.
INSERT INTO tether_workflows (name, queue, updated_at) VALUES (:name, :queue, :now)
ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, updated_at = excluded.updated_at;

-- workflow_list --
-- Registered workflow names and their queues.
SELECT name, queue FROM tether_workflows ORDER BY name;

-- run_metrics_set --
-- Replace a run's metrics under the caller's lease.
UPDATE tether_runs SET metrics = :metrics, updated_at = :now
WHERE run_id = :run_id AND fencing_token = :fencing_token AND status = 'running';

-- blob_put --
-- Store texts given as one JSON object {key: text}; a key already stored is kept.
INSERT OR IGNORE INTO tether_blobs (key, value) SELECT key, value FROM json_each(:blobs);

-- blob_get --
-- The stored texts of the keys given as one JSON array.
SELECT key, value FROM tether_blobs WHERE key IN (SELECT value FROM json_each(:keys));

-- kv_get --
-- A shared value and its version.
SELECT value, version FROM tether_kv WHERE key = :key;

-- kv_insert --
-- Create a shared value at version 1 unless the key exists.
INSERT INTO tether_kv (key, value, version, updated_at) VALUES (:key, :value, 1, :now)
ON CONFLICT (key) DO NOTHING;

-- kv_update --
-- Replace a shared value if its version is still the one the caller read.
UPDATE tether_kv SET value = :value, version = version + 1, updated_at = :now
WHERE key = :key AND version = :version;

-- rate_get --
-- A token bucket's state.
SELECT tokens, updated_at FROM tether_rate_buckets WHERE key = :key;

-- rate_put --
-- Write a token bucket's state after a take.
INSERT INTO tether_rate_buckets (key, tokens, updated_at) VALUES (:key, :tokens, :updated_at)
ON CONFLICT (key) DO UPDATE SET tokens = :tokens, updated_at = :updated_at;

-- queue_limit_set --
-- Set a queue's concurrency limit. The limit 0 is a pause: it keeps the limit the
-- queue held (none: NULL) in limit_before_pause, for queue_resume, unless it was paused
-- already (the first pause's limit stays); any other limit forgets it.
INSERT INTO tether_queue_limits (queue, max_running, updated_at)
VALUES (:queue, :max_running, :now)
ON CONFLICT (queue) DO UPDATE SET
    limit_before_pause = CASE WHEN excluded.max_running <> 0 THEN NULL
                              WHEN max_running = 0 THEN limit_before_pause
                              ELSE max_running END,
    max_running = excluded.max_running, updated_at = excluded.updated_at;

-- queue_paused --
-- A queue's pause, if it is paused: the limit it held before (NULL: none).
SELECT limit_before_pause FROM tether_queue_limits
WHERE queue = :queue AND max_running = 0;

-- queue_resume --
-- Give a paused queue back the limit it held before its pause.
UPDATE tether_queue_limits SET max_running = limit_before_pause, limit_before_pause = NULL,
                               updated_at = :now
WHERE queue = :queue AND max_running = 0 AND limit_before_pause IS NOT NULL;

-- queue_pauses --
-- Every paused queue (the limit 0) and the limit it held before its pause (NULL: none).
SELECT queue, limit_before_pause FROM tether_queue_limits WHERE max_running = 0
ORDER BY queue;

-- queue_limit_delete --
-- Remove a queue's concurrency limit.
DELETE FROM tether_queue_limits WHERE queue = :queue;

-- signal_pending --
-- Whether a signal of a name waits unconsumed (the pending index answers it).
SELECT EXISTS (SELECT 1 FROM tether_signals
               WHERE run_id = :run_id AND name = :name AND consumed_position IS NULL);

-- queue_limits --
-- Every queue with a concurrency limit.
SELECT queue, max_running FROM tether_queue_limits ORDER BY queue;

-- queue_held --
-- Runs of a queue held under a lease that has not expired, and the earliest expiry.
SELECT count(*), min(available_at) FROM tether_runs
WHERE queue = :queue AND status = 'running' AND available_at > :now;

-- queue_running --
-- Running runs of a queue (leases expired or not) and the earliest lease expiry.
SELECT count(*), min(available_at) FROM tether_runs
WHERE queue = :queue AND status = 'running';

-- run_queue_limited --
-- Whether a run's queue has a concurrency limit.
SELECT 1 FROM tether_queue_limits
WHERE queue = (SELECT queue FROM tether_runs WHERE run_id = :run_id);

-- run_get_many --
-- The runs of the ids given as a JSON array; of the given statuses only (a JSON array)
-- unless :statuses is NULL.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM tether_runs
WHERE run_id IN (SELECT value FROM json_each(:run_ids))
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)));

-- queue_limits_of --
-- The concurrency limits of those of the queues (a JSON array) that have one.
SELECT queue, max_running FROM tether_queue_limits
WHERE queue IN (SELECT value FROM json_each(:queues));

-- run_claim --
-- Claim up to :limit runnable runs of one queue without a concurrency limit under a new
-- lease, oldest first: one ordered scan of (queue, available_at) that stops at :limit.
-- A worker claims only runs of its code version or of none, and of the workflows it
-- registered (:workflows, a JSON array; NULL: any), and none of :exclude (a JSON array of
-- run ids; NULL: none); no running run whose lease expired after :takeover_before (NULL:
-- any; a worker back from a store outage gives their owners time to renew them).
-- Each row's last column is the time it became due: its available_at before the claim
-- (the worker's queue-wait histogram), which RETURNING (the row after the update) has
-- lost; read from the picked rows, materialized once (a scan of at most :limit rows).
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
WITH pick AS MATERIALIZED (
    SELECT run_id, available_at FROM tether_runs
    WHERE queue = +:queue AND available_at <= :now
      AND (version IS NULL OR version = :version)
      AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
      AND (:exclude IS NULL OR run_id NOT IN (SELECT value FROM json_each(:exclude)))
      AND (:takeover_before IS NULL OR status <> 'running'
           OR available_at <= :takeover_before)
    ORDER BY available_at LIMIT :limit + 0)
UPDATE tether_runs
SET status = 'running', owner = :worker_id, fencing_token = fencing_token + 1,
    available_at = :lease_expires, updated_at = :now,
    -- a takeover of a run that was running: its owner died holding it (migration 0005);
    -- not when its owner claims it back (alive, it lost its lease: the store was gone)
    crashes = CASE WHEN status = 'running' AND owner IS NOT :worker_id
                   THEN crashes + 1 ELSE crashes END
WHERE run_id IN (SELECT run_id FROM pick)
RETURNING run_id, workflow, queue, status, input, created_at, updated_at, result, error,
          owner, fencing_token, available_at, cancel_requested, waiting_for, status_info,
          parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
          version, forked_from, forked_at, generation, erased_at, crashes, crashes_seen,
          crash_progress,
          (SELECT p.available_at FROM pick p WHERE p.run_id = tether_runs.run_id);

-- run_claim_candidates --
-- The oldest :limit claimable runs of one queue (the same filter as run_claim): a claim
-- of several queues, or of a queue with a limit, takes the oldest of every queue's
-- candidates (each queue read by its own ordered scan, never one sort of all runs due).
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT run_id, available_at FROM tether_runs
WHERE queue = +:queue AND available_at <= :now
  AND (version IS NULL OR version = :version)
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND (:exclude IS NULL OR run_id NOT IN (SELECT value FROM json_each(:exclude)))
  AND (:takeover_before IS NULL OR status <> 'running'
       OR available_at <= :takeover_before)
ORDER BY available_at LIMIT :limit + 0;

-- run_claim_ids --
-- Claim the runs of the ids given as a JSON array under a new lease.
UPDATE tether_runs
SET status = 'running', owner = :worker_id, fencing_token = fencing_token + 1,
    available_at = :lease_expires, updated_at = :now,
    -- a takeover of a run that was running: its owner died holding it (migration 0005);
    -- not when its owner claims it back (alive, it lost its lease: the store was gone)
    crashes = CASE WHEN status = 'running' AND owner IS NOT :worker_id
                   THEN crashes + 1 ELSE crashes END
WHERE run_id IN (SELECT value FROM json_each(:run_ids))
RETURNING run_id, workflow, queue, status, input, created_at, updated_at, result, error,
          owner, fencing_token, available_at, cancel_requested, waiting_for, status_info,
          parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
          version, forked_from, forked_at, generation, erased_at, crashes, crashes_seen,
          crash_progress;

-- run_any_running --
-- Whether a run is running (tether_runs_status).
SELECT EXISTS (SELECT 1 FROM tether_runs WHERE status = 'running');

-- queue_due --
-- Whether a queued or waiting run of one queue is due at :now: the first entries of
-- tether_runs_claim (queue, available_at) up to :now (it holds every run with an
-- available_at: the queued ones, those waiting on a time, and the running ones, whose
-- is their lease's expiry; an ended run has none).
SELECT EXISTS (SELECT 1 FROM tether_runs
               WHERE queue = :queue AND available_at IS NOT NULL AND available_at <= :now
                 AND status IN ('queued', 'waiting'));

-- queue_next_wake --
-- The earliest available_at after :now of a queued or waiting run of one queue: the
-- first such entry of tether_runs_claim after :now.
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT available_at FROM tether_runs
WHERE queue = +:queue AND available_at IS NOT NULL AND available_at > :now
  AND status IN ('queued', 'waiting')
ORDER BY available_at LIMIT 1;

-- queue_next_available --
-- The earliest time a run of one queue becomes claimable (the same filter as run_claim).
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT MIN(available_at) FROM tether_runs
WHERE queue = +:queue AND available_at IS NOT NULL
  AND (version IS NULL OR version = :version)
  AND (:workflows IS NULL OR workflow IN (SELECT value FROM json_each(:workflows)))
  AND (:exclude IS NULL OR run_id NOT IN (SELECT value FROM json_each(:exclude)));
