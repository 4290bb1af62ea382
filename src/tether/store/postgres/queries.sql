-- Tether's PostgreSQL queries. {schema} is replaced by the store's schema when loaded,
-- %(channel)s is the schema's LISTEN/NOTIFY channel. Every time is a parameter (the
-- caller's clock, which App keeps in step with the server's through server_time);
-- no other query reads now() or CURRENT_TIMESTAMP.
--
-- Fencing: a write into a run holds a lock on the run's row until it commits (FOR NO KEY
-- UPDATE, or the UPDATE itself), and a claim locks the rows it takes (FOR UPDATE SKIP
-- LOCKED). So a takeover waits for, or skips, a run with a write in flight, and a stale
-- write re-checks the fencing token after the takeover committed: it never lands in a
-- journal its new owner has already loaded. The lock is exclusive among the writers of
-- one run (appends included: not FOR SHARE), so a run's events take their ids in commit
-- order (migration 0013).
--
-- Plans: "(status = 'running') IS TRUE" is not indexable, on purpose. Next to a run_id or
-- owner condition it keeps the planner on the primary key (or runs_owner): with
-- statistics that still count few running runs (a fresh table, a burst) it would
-- otherwise walk runs_held (runs_status before migration 0008) and filter, once per row
-- of a group-committed batch.
--
-- Wake-ups without lost wake-ups: the releasing run and the event it waits for meet on
-- one row lock (the run's row for signals, the child's row for children), and the
-- statement that looks for the other side runs after the lock is held, so it sees
-- whatever committed before.

-- run_insert_get --
-- run_insert and the stored run in one statement (no transaction block, one round trip):
-- true and the row inserted, or false and the run that had the id. No row when that run
-- committed after this statement's snapshot was taken: the caller reads it again.
WITH ins AS (
    INSERT INTO {schema}.runs (run_id, workflow, queue, status, input, created_at, updated_at,
                               available_at, parent_run_id, parent_position, on_parent_cancel,
                               version, forked_from, forked_at)
    VALUES (%(run_id)s, %(workflow)s, %(queue)s, %(status)s, %(input)s, %(created_at)s,
            %(updated_at)s, %(available_at)s, %(parent_run_id)s, %(parent_position)s,
            %(on_parent_cancel)s, %(version)s, %(forked_from)s, %(forked_at)s)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, workflow, queue, status, input, created_at, updated_at, result, error,
              owner, fencing_token, available_at, cancel_requested, waiting_for,
              status_info, parent_run_id, finished_at, parent_position, on_parent_cancel,
              metrics, version, forked_from, forked_at, generation, erased_at),
woke AS (SELECT {schema}.wake(%(channel)s, count(*)) FROM ins)
SELECT true, ins.* FROM ins, woke
UNION ALL
SELECT false, run_id, workflow, queue, status, input, created_at, updated_at, result, error,
       owner, fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM {schema}.runs WHERE run_id = %(run_id)s AND NOT EXISTS (SELECT 1 FROM ins);

-- run_get --
-- One run by id, every column (the crash counts of migration 0005, then the time a
-- cancel was requested, its reason and whose cancel it was: _sql.run_from_row).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at,
       crashes, crashes_seen, crash_progress, cancel_requested_at,
       cancel_reason, cancelled_with
FROM {schema}.runs WHERE run_id = %(run_id)s;

-- run_get_many --
-- The runs of these ids (with settled: only those in one of these statuses); erased_at
-- with the rest of migration 0003's columns: an erased run's result is the marker.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM {schema}.runs
WHERE run_id = ANY(%(run_ids)b::text[])
  AND (%(statuses)b::text[] IS NULL OR status = ANY(%(statuses)b::text[]));

-- run_get_ids --
-- The runs of these ids that this transaction did not create, every column (the read
-- behind run_insert_many, after its insert: a run it created is stored as given).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM {schema}.runs WHERE run_id = ANY(%(run_ids)b::text[])
  AND xmin <> pg_current_xact_id()::xid;

-- run_insert_many --
-- Insert runs (one array per column, no id twice) unless their ids exist; returns the
-- ids created, and notifies once if any was.
WITH ins AS (
    INSERT INTO {schema}.runs (run_id, workflow, queue, status, input, created_at,
                               updated_at, available_at, parent_run_id, parent_position,
                               on_parent_cancel, version, forked_from, forked_at)
    SELECT * FROM unnest(%(run_id)b::text[], %(workflow)b::text[], %(queue)b::text[],
                         %(status)b::text[], %(input)b::text[], %(created_at)b::float8[],
                         %(updated_at)b::float8[], %(available_at)b::float8[],
                         %(parent_run_id)b::text[], %(parent_position)b::integer[],
                         %(on_parent_cancel)b::text[], %(version)b::text[],
                         %(forked_from)b::text[], %(forked_at)b::integer[])
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id),
woke AS (SELECT {schema}.wake(%(channel)s, count(*)) FROM ins)
SELECT run_id FROM ins, woke;

-- _list_branch --
-- run_list's and run_list_unsettled's branch of one status (written once per status by the
-- loader: {_x|a,b}).
(SELECT * FROM {schema}.runs WHERE status = '{status}' ORDER BY created_at DESC, run_id LIMIT %(limit)s)

-- run_list --
-- Runs, newest first: the newest of each status through runs_status (status, created_at),
-- or for 'running' through runs_held, merged (as serve.sql's run_search_all: no ordered
-- scan of every run, 0.6 s on 1.1 M runs). The statuses are RunStatus's, all of them.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_list_branch|queued,running,waiting,completed,failed,cancelled,blocked}) AS r
ORDER BY created_at DESC, run_id LIMIT %(limit)s;

-- run_list_unsettled --
-- The queued, running and waiting runs, newest first, in one statement (one snapshot):
-- the newest of each status, merged as run_list's.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_list_branch|queued,running,waiting}) AS r
ORDER BY created_at DESC, run_id LIMIT %(limit)s;

-- run_list_status --
-- Runs of one status, newest first.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM {schema}.runs WHERE status = %(status)s
ORDER BY created_at DESC, run_id LIMIT %(limit)s;

-- journal_read --
-- A run's journal in position order.
SELECT position, kind, name, status, result, error, attempts, started_at, finished_at,
       next_attempt_at, args
FROM {schema}.journal WHERE run_id = %(run_id)s ORDER BY position;

-- ordered_plan --
-- For the rest of the transaction: no bitmap scans (the first statement of run_claim's
-- and next_available_at's transactions). Both read each queue in order of (queue,
-- available_at) and stop early; on a table whose statistics are stale (it grew since its
-- last ANALYZE, or was never analyzed: autovacuum off, or a burst of starts within
-- autovacuum's nap) the planner estimates about one row and picks a bitmap scan that
-- fetches and sorts every claimable run instead: 42 ms per claim with 60,000 queued runs
-- against 4 ms, and parking runs slowed as their number grew.
SELECT set_config('enable_bitmapscan', 'off', true);

-- run_claim_lock --
-- Lock the concurrency limits of the claimed queues that have one, in a statement of its
-- own before the claim: the claim's snapshot, taken after the lock was granted, then
-- counts every run that an earlier claim of those queues took. Queues without a limit
-- have no row here, so their claims lock nothing and never wait.
SELECT queue FROM {schema}.queue_limits WHERE queue = ANY(%(queues)s)
ORDER BY queue FOR NO KEY UPDATE;

-- run_claim --
-- Claim up to limit runnable runs under a new lease; skips runs another transaction holds,
-- the runs of %(exclude)s (NULL: none; the runs a worker handed back for a while) and the
-- running runs whose lease expired after %(takeover_before)s (NULL: none; a worker back
-- from a store outage gives their owners time to renew them).
-- A queue with a limit gives at most its limit less the runs held under a lease that
-- has not expired (runs_held); the others are claimed oldest first. Each queue is read
-- by its own ordered scans of (queue, available_at), so a claim costs the same with ten
-- or a hundred thousand runs due (`queue = ANY(...) ORDER BY` would sort them all): one
-- of runs_claim for the runs that are not running, one of runs_held for the running
-- runs whose lease expired (migration 0008 keeps running runs out of runs_claim).
WITH lim AS MATERIALIZED (
    SELECT l.queue, greatest(l.max_running - (
               SELECT count(*) FROM {schema}.runs h
               WHERE h.queue = l.queue AND h.status = 'running'
                 AND h.available_at > %(now)s), 0) AS room
    FROM {schema}.queue_limits l WHERE l.queue = ANY(%(queues)s)),
free AS (
    SELECT q.queue, %(limit)s::bigint AS room FROM unnest(%(queues)s::text[]) AS q(queue)
    WHERE q.queue <> ALL(ARRAY(SELECT queue FROM lim))
    UNION ALL
    SELECT queue, least(room, %(limit)s) FROM lim),
pick AS (
    SELECT p.run_id, p.available_at FROM free CROSS JOIN LATERAL (
        SELECT run_id, available_at FROM (
            SELECT * FROM (
                SELECT run_id, available_at FROM {schema}.runs r
                WHERE r.queue = free.queue AND r.available_at <= %(now)s
                  AND r.status <> 'running'
                  AND (r.version IS NULL OR r.version = %(version)s::text)
                  AND (%(workflows)s::text[] IS NULL OR r.workflow = ANY(%(workflows)s::text[]))
                  AND (%(exclude)s::text[] IS NULL OR r.run_id <> ALL(%(exclude)s::text[]))
                ORDER BY r.available_at
                LIMIT free.room
                FOR UPDATE SKIP LOCKED) not_running
            UNION ALL
            SELECT * FROM (
                SELECT run_id, available_at FROM {schema}.runs r
                WHERE r.queue = free.queue AND r.available_at <= %(now)s
                  AND r.status = 'running'
                  AND (r.version IS NULL OR r.version = %(version)s::text)
                  AND (%(workflows)s::text[] IS NULL OR r.workflow = ANY(%(workflows)s::text[]))
                  AND (%(exclude)s::text[] IS NULL OR r.run_id <> ALL(%(exclude)s::text[]))
                  AND (%(takeover_before)s::float8 IS NULL
                       OR r.available_at <= %(takeover_before)s::float8)
                ORDER BY r.available_at
                LIMIT free.room
                FOR UPDATE SKIP LOCKED) expired) due
        ORDER BY available_at
        LIMIT free.room) p)
UPDATE {schema}.runs
SET status = 'running', owner = %(worker_id)s, fencing_token = fencing_token + 1,
    available_at = %(lease_expires)s, updated_at = %(now)s,
    -- takeovers of a run that was running (its owner died holding it) (migration 0005;
    -- see Worker._crash_check); not when its owner claims it back (alive, it lost its
    -- lease: the database was gone)
    crashes = CASE WHEN status = 'running' AND owner IS DISTINCT FROM %(worker_id)s
                   THEN crashes + 1 ELSE crashes END
-- Each row's last column is the time it became due: its available_at before the claim
-- (the worker's queue-wait histogram), which RETURNING (the row after the update) has lost.
FROM (SELECT run_id, available_at FROM pick ORDER BY available_at LIMIT %(limit)s)
    AS chosen(claimed_id, due_at)
WHERE run_id = chosen.claimed_id
RETURNING run_id, workflow, queue, status, input, created_at, updated_at, result, error,
          owner, fencing_token, available_at, cancel_requested, waiting_for, status_info,
          parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at, crashes, crashes_seen,
       crash_progress, chosen.due_at;

-- run_claim_journals --
-- The journals of the runs this transaction just claimed (a later statement, so that it
-- sees every append that committed before the claim took its locks).
SELECT j.run_id, j.position, j.kind, j.name, j.status, j.result, j.error, j.attempts,
       j.started_at, j.finished_at, j.next_attempt_at, j.args
FROM {schema}.journal j
WHERE j.run_id IN (
    SELECT r.run_id FROM {schema}.runs r
    WHERE r.queue = ANY(%(queues)s) AND r.status = 'running'
      AND r.available_at = %(lease_expires)s AND r.owner = %(worker_id)s
      AND r.xmin = pg_current_xact_id_if_assigned()::xid)
ORDER BY j.run_id, j.position;

-- lease_lock --
-- Lock the run's row if the lease is current (the first statement of a fenced write).
SELECT 1 FROM {schema}.runs
WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
  AND (status = 'running') IS TRUE
FOR NO KEY UPDATE;

-- lease_tokens --
-- Current fencing tokens of running runs (to tell a stale lease from a refused write).
SELECT run_id, fencing_token FROM {schema}.runs
WHERE run_id = ANY(%(run_ids)s) AND (status = 'running') IS TRUE;

-- journal_written --
-- The entries at these positions that these fencing tokens wrote: a retried append
-- whose first attempt committed, its answer lost with its connection, finds its own
-- entry here (read only when an append was refused under a current lease).
SELECT k.run_id, j.position, j.kind, j.name, j.status, j.result, j.error, j.attempts,
       j.started_at, j.finished_at, j.next_attempt_at, j.args
FROM unnest(%(run_ids)s::text[], %(positions)s::integer[], %(tokens)s::bigint[])
     AS k(run_id, position, fencing_token)
JOIN {schema}.journal j
  ON j.run_id = k.run_id AND j.position = k.position AND j.fencing_token = k.fencing_token;

-- _journal_upsert --
-- (A fragment.) A journal insert's conflict: a pending entry is replaced, a final one
-- never.
    ON CONFLICT (run_id, position) DO UPDATE SET
        kind = excluded.kind, name = excluded.name,
        status = excluded.status, result = excluded.result, error = excluded.error,
        attempts = excluded.attempts, finished_at = excluded.finished_at,
        next_attempt_at = excluded.next_attempt_at, fencing_token = excluded.fencing_token,
        -- (a step reset by a retry has none: its first new attempt's)
        started_at = coalesce(j.started_at, excluded.started_at)
    WHERE j.status = 'pending';

-- _append_upsert_and_events --
-- (A fragment.) The end of journal_append and journal_append_one: the upsert, then the
-- op events of the final entries written (ev), in run and position order.
{_journal_upsert}
    RETURNING j.run_id, j.position, j.attempts, j.status, j.kind, j.name),
ev AS (
    INSERT INTO {schema}.run_events (run_id, kind, data)
    SELECT run_id, 'o', position || ' ' || attempts || ' ' || status || ' ' || kind || ' '
                        || name
    FROM w WHERE status <> 'pending' ORDER BY run_id, position)
SELECT run_id, position FROM w;

-- journal_append --
-- Record operations' outcomes: one array per column (sent in binary, so nothing is
-- escaped), one element per entry, no (run_id, position) twice. An entry whose lease was
-- taken over writes nothing; a final entry is never overwritten. Returns the keys written.
-- Each entry looks up its run's row by primary key (LATERAL), in run_id order, so rows are
-- locked in the order heartbeats lock them; a plan of that shape is the only sensible
-- one at any table size, so the statement is prepared: a generic plan made while runs
-- was tiny stays a primary-key lookup per entry (a join of the arrays with runs did not:
-- see PostgresStore._flush_appends).
-- The flag, set for this transaction before any row is written (the InitPlan that gates
-- the insert), tells the row trigger to skip the op events the statement writes itself
-- (ev, in the fragment; migration 0009).
WITH flag AS MATERIALIZED (SELECT set_config('tether.op_events', 'statement', true) AS f),
w AS (
    INSERT INTO {schema}.journal AS j (run_id, position, kind, name, status, result, error,
                                       attempts, started_at, finished_at, next_attempt_at,
                                       args, fencing_token)
    SELECT u.run_id, u.position, u.kind, u.name, u.status, u.result, u.error, u.attempts,
           u.started_at, u.finished_at, u.next_attempt_at, u.args, u.fencing_token
    FROM (SELECT * FROM unnest(
              %(run_id)b::text[], %(position)b::integer[], %(kind)b::text[],
              %(name)b::text[], %(status)b::text[], %(result)b::text[], %(error)b::text[],
              %(attempts)b::integer[], %(started_at)b::float8[], %(finished_at)b::float8[],
              %(next_attempt_at)b::float8[], %(args)b::text[], %(fencing_token)b::bigint[])
              AS a(run_id, position, kind, name, status, result, error, attempts,
                   started_at, finished_at, next_attempt_at, args, fencing_token)
          ORDER BY run_id) u
    CROSS JOIN LATERAL (
        SELECT 1 FROM {schema}.runs r
        WHERE r.run_id = u.run_id AND r.fencing_token = u.fencing_token
          AND (r.status = 'running') IS TRUE
        FOR NO KEY UPDATE) held
    WHERE (SELECT f FROM flag) = 'statement'
{_append_upsert_and_events}

-- _append_one_insert --
-- (A fragment.) The insert of journal_append_one and journal_append_one_metered: one
-- entry's values as scalar parameters, with the run id and fencing token of the row it
-- selects from (what follows it).
    INSERT INTO {schema}.journal AS j (run_id, position, kind, name, status, result, error,
                                       attempts, started_at, finished_at, next_attempt_at,
                                       args, fencing_token)
    SELECT run_id, %(position)s::integer, %(kind)s::text, %(name)s::text, %(status)s::text,
           %(result)s::text, %(error)s::text, %(attempts)s::integer, %(started_at)s::float8,
           %(finished_at)s::float8, %(next_attempt_at)s::float8, %(args)s::text,
           fencing_token

-- journal_append_one --
-- The same for one entry, with scalar parameters (a prepared statement: the common case
-- of a run appending while no other run does).
WITH flag AS MATERIALIZED (SELECT set_config('tether.op_events', 'statement', true) AS f),
w AS (
{_append_one_insert}
    FROM {schema}.runs
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE AND (SELECT f FROM flag) = 'statement'
    FOR NO KEY UPDATE
{_append_upsert_and_events}

-- journal_append_one_metered --
-- journal_append_one with the run's metrics replaced in the same statement (a durable LLM
-- call's cost and its entry: one commit). The update is fenced like the append and takes
-- the run's row lock; the entry is inserted from the row it updated, so a stale lease
-- writes neither, and the metrics stay written when a final entry holds the position
-- (the call was paid all the same).
WITH flag AS MATERIALIZED (SELECT set_config('tether.op_events', 'statement', true) AS f),
m AS (
    UPDATE {schema}.runs SET metrics = %(metrics)s::text, updated_at = %(now)s::float8
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE AND (SELECT f FROM flag) = 'statement'
    RETURNING run_id, fencing_token),
w AS (
{_append_one_insert}
    FROM m
{_append_upsert_and_events}

-- run_finish --
-- End a run under the caller's lease; returns 1 (and notifies) if it did.
WITH fin AS (
    UPDATE {schema}.runs
    SET status = %(status)s, result = %(result)s, error = %(error)s, finished_at = %(now)s,
        updated_at = %(now)s, owner = NULL, available_at = NULL, waiting_for = NULL,
        wait_signal = NULL, wait_child = NULL
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM fin;

-- run_finish_blocked --
-- run_finish for an end as blocked, and the status the run ended with: cancelled
-- instead (the block's reason its error) if its cancel is pending. A cancel committed
-- after its worker last heard of cancels has no code left that could see it (as
-- run_cancel_blocked). Its own statement, so that every other end keeps run_finish's.
WITH fin AS (
    UPDATE {schema}.runs
    SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'blocked' END,
        result = %(result)s, error = %(error)s, finished_at = %(now)s,
        updated_at = %(now)s, owner = NULL, available_at = NULL, waiting_for = NULL,
        wait_signal = NULL, wait_child = NULL
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE
    RETURNING status)
SELECT {schema}.wake(%(channel)s, count(*)), max(status) FROM fin;

-- run_wake_waiters --
-- A run ended (with this status and token): runs waiting for it as a child become
-- claimable. A statement of its own, after the one that ended the run took its row lock.
UPDATE {schema}.runs SET available_at = %(now)s, updated_at = %(now)s
WHERE wait_child = %(run_id)s AND status = 'waiting'
  AND EXISTS (SELECT 1 FROM {schema}.runs c
              WHERE c.run_id = %(run_id)s AND c.status = %(status)s
                AND (%(fencing_token)s::bigint IS NULL
                     OR c.fencing_token = %(fencing_token)s::bigint));

-- run_wake_listed --
-- A run ended (as run_wake_waiters): its parent, if it waits for it among several
-- children (wait_child in the list form of wait_names: chr(31) before and after each
-- id), becomes claimable. Its release locked the children it lists (child_lock_listed).
UPDATE {schema}.runs w SET available_at = %(now)s, updated_at = %(now)s
FROM {schema}.runs c
WHERE c.run_id = %(run_id)s AND c.status = %(status)s
  AND (%(fencing_token)s::bigint IS NULL OR c.fencing_token = %(fencing_token)s::bigint)
  AND w.run_id = c.parent_run_id AND w.status = 'waiting'
  AND strpos(w.wait_child, chr(31) || c.run_id || chr(31)) > 0;

-- run_lock_many --
-- Lock the rows of runs about to end together, in run_id order (as heartbeats and
-- journal appends lock them), before run_finish_many updates them.
SELECT 1 FROM {schema}.runs WHERE run_id = ANY(%(run_id)b::text[])
ORDER BY run_id FOR NO KEY UPDATE;

-- run_finish_many --
-- run_finish for many runs (one array per column, no run twice); returns the ids of
-- those it ended (the others' leases were lost), and notifies once if any. Never given
-- a blocked end: the store writes that one alone (run_finish_blocked, which may end it
-- cancelled, and its children's cancel), so each run here ends with the status asked.
WITH fin AS (
    UPDATE {schema}.runs r
    SET status = u.status, result = u.result, error = u.error, finished_at = u.now,
        updated_at = u.now, owner = NULL, available_at = NULL, waiting_for = NULL,
        wait_signal = NULL, wait_child = NULL
    FROM unnest(%(run_id)b::text[], %(fencing_token)b::bigint[], %(status)b::text[],
                %(result)b::text[], %(error)b::text[], %(now)b::float8[])
         AS u(run_id, fencing_token, status, result, error, now)
    WHERE r.run_id = u.run_id AND r.fencing_token = u.fencing_token
      AND (r.status = 'running') IS TRUE
    RETURNING r.run_id),
woke AS (SELECT {schema}.wake(%(channel)s, count(*)) FROM fin)
SELECT fin.run_id FROM fin, woke;

-- run_wake_waiters_many --
-- run_wake_waiters for the runs run_finish_many ended (same arrays).
UPDATE {schema}.runs w SET available_at = u.now, updated_at = u.now
FROM unnest(%(run_id)b::text[], %(fencing_token)b::bigint[], %(status)b::text[],
            %(now)b::float8[]) AS u(run_id, fencing_token, status, now)
WHERE w.wait_child = u.run_id AND w.status = 'waiting'
  AND EXISTS (SELECT 1 FROM {schema}.runs c
              WHERE c.run_id = u.run_id AND c.status = u.status
                AND c.fencing_token = u.fencing_token);

-- run_wake_listed_many --
-- run_wake_listed for the runs run_finish_many ended (same arrays).
UPDATE {schema}.runs w SET available_at = u.now, updated_at = u.now
FROM unnest(%(run_id)b::text[], %(fencing_token)b::bigint[], %(status)b::text[],
            %(now)b::float8[]) AS u(run_id, fencing_token, status, now)
JOIN {schema}.runs c ON c.run_id = u.run_id AND c.status = u.status
                    AND c.fencing_token = u.fencing_token
WHERE w.run_id = c.parent_run_id AND w.status = 'waiting'
  AND strpos(w.wait_child, chr(31) || u.run_id || chr(31)) > 0;

-- child_lock --
-- Lock the child a run is about to wait for, whatever its state: its end and our release
-- then happen one after the other.
SELECT 1 FROM {schema}.runs WHERE run_id = %(child)s FOR SHARE;

-- child_lock_listed --
-- child_lock for a run waiting for several children (the list form of wait_names).
SELECT 1 FROM {schema}.runs
WHERE run_id = ANY(string_to_array(btrim(%(child)s::text, chr(31)), chr(31)))
ORDER BY run_id FOR SHARE;

-- run_release --
-- Hand a run back to wait; claimable at once if what it waits for already happened.
UPDATE {schema}.runs
SET status = 'waiting', owner = NULL, waiting_for = %(description)s, updated_at = %(now)s,
    wait_signal = %(signal)s, wait_child = %(child)s,
    available_at = CASE
        WHEN cancel_requested THEN %(now)s
        WHEN %(signal)s::text IS NOT NULL AND EXISTS (
            SELECT 1 FROM {schema}.signals s
            WHERE s.run_id = %(run_id)s AND s.name = %(signal)s
              AND s.consumed_position IS NULL) THEN %(now)s
        WHEN %(child)s::text IS NOT NULL AND EXISTS (
            SELECT 1 FROM {schema}.runs c
            WHERE c.run_id = %(child)s
              AND c.status IN ('completed', 'failed', 'cancelled')) THEN %(now)s
        ELSE %(available_at)s::float8 END
WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
  AND (status = 'running') IS TRUE;

-- run_release_listed --
-- run_release for a run waiting for several signals or children (either in the list
-- form of wait_names; a single name is a list of one here).
UPDATE {schema}.runs
SET status = 'waiting', owner = NULL, waiting_for = %(description)s, updated_at = %(now)s,
    wait_signal = %(signal)s, wait_child = %(child)s,
    available_at = CASE
        WHEN cancel_requested THEN %(now)s
        WHEN EXISTS (
            SELECT 1 FROM {schema}.signals s
            WHERE s.run_id = %(run_id)s
              AND s.name = ANY(string_to_array(btrim(%(signal)s::text, chr(31)), chr(31)))
              AND s.consumed_position IS NULL) THEN %(now)s
        WHEN EXISTS (
            SELECT 1 FROM {schema}.runs c
            WHERE c.run_id = ANY(string_to_array(btrim(%(child)s::text, chr(31)), chr(31)))
              AND c.status IN ('completed', 'failed', 'cancelled')) THEN %(now)s
        ELSE %(available_at)s::float8 END
WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
  AND (status = 'running') IS TRUE;

-- run_release_wake --
-- A run of a queue with a concurrency limit was released: its place is free, so wake
-- the workers waiting for one; so does a run released claimable at once (handed back by
-- a worker that cannot decrypt it or is stopping). Other releases notify nothing.
SELECT {schema}.wake(%(channel)s, count(*)
                     + coalesce((%(available_at)s::float8 <= %(now)s)::int, 0))
FROM {schema}.queue_limits
WHERE queue = (SELECT queue FROM {schema}.runs WHERE run_id = %(run_id)s);

-- child_lock_many --
-- child_lock for the children of runs released together (NULLs for runs without one).
SELECT 1 FROM {schema}.runs WHERE run_id = ANY(%(child)b::text[])
ORDER BY run_id FOR SHARE;

-- run_release_many --
-- run_release for many runs (one array per column, no run twice; after run_lock_many and
-- child_lock_many); returns the ids of those it released (the others' leases were lost).
-- Wakes the workers once, as run_release_wake would for each: for every run of a queue
-- with a concurrency limit, and for every run released claimable at once.
WITH rel AS (
    UPDATE {schema}.runs r
    SET status = 'waiting', owner = NULL, waiting_for = u.description, updated_at = u.now,
        wait_signal = u.signal, wait_child = u.child,
        available_at = CASE
            WHEN r.cancel_requested THEN u.now
            WHEN u.signal IS NOT NULL AND EXISTS (
                SELECT 1 FROM {schema}.signals s
                WHERE s.run_id = u.run_id AND s.name = u.signal
                  AND s.consumed_position IS NULL) THEN u.now
            WHEN u.child IS NOT NULL AND EXISTS (
                SELECT 1 FROM {schema}.runs c
                WHERE c.run_id = u.child
                  AND c.status IN ('completed', 'failed', 'cancelled')) THEN u.now
            ELSE u.available_at END
    FROM unnest(%(run_id)b::text[], %(fencing_token)b::bigint[], %(description)b::text[],
                %(signal)b::text[], %(child)b::text[], %(available_at)b::float8[],
                %(now)b::float8[])
         AS u(run_id, fencing_token, description, signal, child, available_at, now)
    WHERE r.run_id = u.run_id AND r.fencing_token = u.fencing_token
      AND (r.status = 'running') IS TRUE
    RETURNING r.run_id, r.queue, coalesce(u.available_at <= u.now, false) AS at_once),
woke AS (
    SELECT {schema}.wake(%(channel)s,
        (SELECT count(*) FROM rel JOIN {schema}.queue_limits q ON q.queue = rel.queue)
        + (SELECT count(*) FROM rel WHERE at_once)))
SELECT rel.run_id FROM rel, woke;

-- run_lock --
-- Lock a run's row whatever its state; returns its status and when its payloads were
-- erased (if they were).
SELECT status, erased_at FROM {schema}.runs WHERE run_id = %(run_id)s FOR NO KEY UPDATE;

-- run_resume --
-- An operator makes a blocked run claimable again; returns 1 (and notifies) if it did.
WITH r AS (
    UPDATE {schema}.runs
    SET status = 'queued', available_at = %(now)s, updated_at = %(now)s, error = NULL
    WHERE run_id = %(run_id)s AND status = 'blocked' AND erased_at IS NULL
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM r;

-- run_set_status_info --
-- Publish a run's live status under the caller's lease.
UPDATE {schema}.runs SET status_info = %(info)s, updated_at = %(now)s
WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
  AND (status = 'running') IS TRUE;

-- signal_insert --
-- Store a signal for a run that has not ended; a repeated idempotency key stores nothing.
INSERT INTO {schema}.signals (run_id, name, payload, idempotency_key, created_at)
SELECT %(run_id)s, %(name)s::text, %(payload)s::text, %(key)s::text, %(now)s::float8
FROM {schema}.runs
WHERE run_id = %(run_id)s AND status NOT IN ('completed', 'failed', 'cancelled')
ON CONFLICT (run_id, idempotency_key) DO NOTHING
RETURNING signal_id;

-- signal_find_key --
-- The signal stored under an idempotency key.
SELECT signal_id, name, payload FROM {schema}.signals
WHERE run_id = %(run_id)s AND idempotency_key = %(key)s;

-- signal_wake --
-- A run waiting for this signal becomes claimable (and is notified).
WITH w AS (
    UPDATE {schema}.runs SET available_at = %(now)s, updated_at = %(now)s
    WHERE run_id = %(run_id)s AND status = 'waiting'
      AND (wait_signal = %(name)s
           OR strpos(wait_signal, chr(31) || %(name)s || chr(31)) > 0)
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM w;

-- signal_take --
-- Consume the oldest pending signal into the journal at a position, else record the
-- timeout there if the deadline passed by clock_now (the App's clock, synced to this
-- server's; now, the entry's finished_at, is a stamp that may be past it). Past it, only
-- a signal sent by sent_by (the deadline; infinity at a wait's first take: every signal
-- there was sent before the wait) by its created_at, on that clock; one
-- statement, its own transaction. Returns
-- whether the lease held, whether there was something to record, and what was recorded.
-- The run's row is locked (lease_lock's fencing) only when there is something to record:
-- a wait with nothing to take, the usual case, locks and writes nothing, so its commit
-- flushes no WAL, and its lease is checked by a plain read. A signal sent after this
-- statement's snapshot is run_release's to see.
WITH want AS MATERIALIZED (
    SELECT (%(deadline)s::float8 <= %(clock_now)s::float8) IS TRUE
           OR EXISTS (SELECT 1 FROM {schema}.signals
                      WHERE run_id = %(run_id)s AND name = %(name)s
                        AND consumed_position IS NULL) AS record),
held AS (
    SELECT 1 FROM {schema}.runs
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE),
lease AS (
    SELECT 1 FROM {schema}.runs
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE AND (SELECT record FROM want)
    FOR NO KEY UPDATE),
sig AS (
    SELECT signal_id, payload FROM {schema}.signals
    WHERE run_id = %(run_id)s AND name = %(name)s AND consumed_position IS NULL
      -- (past the deadline, only a signal sent by then: one sent after it came after
      -- the timeout, and stays pending for a later wait)
      AND (created_at <= %(sent_by)s::float8
           OR (%(deadline)s::float8 <= %(clock_now)s::float8) IS NOT TRUE)
      AND EXISTS (SELECT 1 FROM lease)
    ORDER BY signal_id LIMIT 1
    FOR UPDATE),
entry AS (
    SELECT sig.signal_id,
           CASE WHEN sig.signal_id IS NULL THEN 'error' ELSE 'ok' END AS status,
           sig.payload AS result,
           CASE WHEN sig.signal_id IS NULL THEN %(timeout_error)s::text END AS error,
           CASE WHEN sig.signal_id IS NULL THEN %(deadline)s::float8 END AS next_attempt_at
    FROM lease LEFT JOIN sig ON true
    WHERE sig.signal_id IS NOT NULL OR %(deadline)s::float8 <= %(clock_now)s::float8),
ins AS (
    INSERT INTO {schema}.journal AS j (run_id, position, kind, name, status, result, error,
                                       attempts, finished_at, next_attempt_at, fencing_token)
    SELECT %(run_id)s, %(position)s, 'signal', %(name)s, status, result, error, 1,
           %(now)s, next_attempt_at, %(fencing_token)s
    FROM entry
{_journal_upsert}
    RETURNING status, result, error, next_attempt_at),
used AS (
    UPDATE {schema}.signals SET consumed_position = %(position)s
    WHERE signal_id = (SELECT signal_id FROM entry) AND EXISTS (SELECT 1 FROM ins))
SELECT CASE WHEN (SELECT record FROM want) THEN (SELECT count(*) FROM lease)
            ELSE (SELECT count(*) FROM held) END,
       (SELECT count(*) FROM entry),
       ins.status, ins.result, ins.error, ins.next_attempt_at
FROM (SELECT 1) AS one LEFT JOIN ins ON true;

-- child_start --
-- Journal the child_start entry and insert the child (idempotent on its id) if the entry
-- was written; nothing if the id is a run that is not this parent's child. Runs after
-- lease_lock. Returns (entry written, child created).
WITH jins AS (
    INSERT INTO {schema}.journal AS j (run_id, position, kind, name, status, result, error,
                                       attempts, started_at, finished_at, next_attempt_at,
                                       args, fencing_token)
    SELECT %(run_id)s, %(position)s::integer, %(kind)s::text, %(name)s::text,
           %(status)s::text, %(result)s::text, %(error)s::text, %(attempts)s::integer,
           %(started_at)s::float8, %(finished_at)s::float8, %(next_attempt_at)s::float8,
           %(args)s::text, %(fencing_token)s::bigint
    FROM {schema}.runs
    WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
      AND (status = 'running') IS TRUE
      -- (an id used by a run that is not this parent's child is refused: nothing written)
      AND NOT EXISTS (SELECT 1 FROM {schema}.runs c WHERE c.run_id = %(c_run_id)s
                      AND c.parent_run_id IS DISTINCT FROM %(run_id)s)
{_journal_upsert}
    RETURNING 1),
cins AS (
    INSERT INTO {schema}.runs (run_id, workflow, queue, status, input, created_at,
                               updated_at, available_at, parent_run_id, parent_position,
                               on_parent_cancel, version)
    SELECT %(c_run_id)s, %(c_workflow)s::text, %(c_queue)s::text, %(c_status)s::text,
           %(c_input)s::text, %(c_created_at)s::float8, %(c_updated_at)s::float8,
           %(c_available_at)s::float8, %(c_parent_run_id)s::text,
           %(c_parent_position)s::integer, %(c_on_parent_cancel)s::text,
           %(c_version)s::text
    WHERE EXISTS (SELECT 1 FROM jins)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM jins), {schema}.wake(%(channel)s, (SELECT count(*) FROM cins));

-- run_children_end --
-- A run's children whose policy is cancel and that have no code that could observe a
-- cancel end cancelled at once (as run_cancel_blocked): blocked ones, and queued ones
-- that never started (no journal entry: e.g. a durable tool on a queue no worker
-- serves). (A claim that takes a queued child first makes it running: not ended here.)
-- Notifies if any ended (run_children_wake_waiters may make a run claimable). With
-- if_cancelled, only if the parent is cancelled (run_cancel runs it for any run it asks
-- to cancel: only one it ended at once passes it on here).
WITH e AS (
    UPDATE {schema}.runs r
    SET status = 'cancelled', cancel_requested = true, updated_at = %(now)s,
        cancel_requested_at = CASE WHEN cancel_requested
                                   THEN coalesce(cancel_requested_at, %(now)s)
                                   ELSE %(now)s END,
        cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                             ELSE (SELECT p.cancel_reason FROM {schema}.runs p
                                   WHERE p.run_id = %(parent_run_id)s) END,
        cancelled_with = CASE WHEN cancel_requested THEN cancelled_with
                              ELSE %(parent_run_id)s END,
        finished_at = %(now)s, owner = NULL, available_at = NULL
    WHERE r.parent_run_id = %(parent_run_id)s AND r.on_parent_cancel = 'cancel'
      AND (NOT %(if_cancelled)s
           OR EXISTS (SELECT 1 FROM {schema}.runs p
                      WHERE p.run_id = %(parent_run_id)s AND p.status = 'cancelled'))
      AND (r.status = 'blocked'
           OR (r.status = 'queued'
               AND NOT EXISTS (SELECT 1 FROM {schema}.journal j
                               WHERE j.run_id = r.run_id)))
    RETURNING r.run_id)
SELECT array_agg(run_id ORDER BY run_id), {schema}.wake(%(channel)s, count(*)) FROM e;

-- run_children_cancel --
-- Ask a run's other unfinished children whose policy is cancel to cancel (after
-- run_children_end, in its transaction); notifies if any. With if_cancelled, only if
-- the parent is cancelled.
WITH c AS (
    UPDATE {schema}.runs
    SET cancel_requested = true, updated_at = %(now)s,
        cancel_requested_at = CASE WHEN cancel_requested
                                   THEN coalesce(cancel_requested_at, %(now)s)
                                   ELSE %(now)s END,
        cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                             ELSE (SELECT p.cancel_reason FROM {schema}.runs p
                                   WHERE p.run_id = %(parent_run_id)s) END,
        cancelled_with = CASE WHEN cancel_requested THEN cancelled_with
                              ELSE %(parent_run_id)s END,
        available_at = CASE WHEN status IN ('queued', 'waiting') THEN %(now)s
                            ELSE available_at END
    WHERE parent_run_id = %(parent_run_id)s AND on_parent_cancel = 'cancel'
      AND status NOT IN ('completed', 'failed', 'cancelled')
      AND (NOT %(if_cancelled)s
           OR EXISTS (SELECT 1 FROM {schema}.runs p
                      WHERE p.run_id = %(parent_run_id)s AND p.status = 'cancelled'))
    RETURNING run_id)
SELECT array_agg(run_id ORDER BY run_id), {schema}.wake(%(channel)s, count(*)) FROM c;

-- run_children_wake_waiters --
-- Children of the run that ended cancelled: runs waiting for one become claimable. A
-- statement of its own, after the one that ended them took their row locks. (Only a
-- child's parent waits for it, and this parent has ended already, so today it wakes
-- nothing; it reads the single-name form only, the list form of wait_names being a
-- parent's own.)
UPDATE {schema}.runs SET available_at = %(now)s, updated_at = %(now)s
WHERE wait_child IN (SELECT c.run_id FROM {schema}.runs c
                     WHERE c.parent_run_id = %(parent_run_id)s AND c.status = 'cancelled')
  AND status = 'waiting';

-- run_cancel_blocked --
-- A blocked run, or a queued one that never started (no journal entry: none of its code
-- ran, e.g. of a workflow no worker has), has no code that could observe a cancel: end
-- it at once. (A claim that takes the queued run first makes it running: not ended here.)
WITH b AS (
    UPDATE {schema}.runs
    SET status = 'cancelled', cancel_requested = true, updated_at = %(now)s,
        cancel_requested_at = CASE WHEN cancel_requested
                                   THEN coalesce(cancel_requested_at, %(now)s)
                                   ELSE %(now)s END,
        cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                             ELSE %(reason)s END,
        cancelled_with = CASE WHEN cancel_requested THEN cancelled_with END,
        finished_at = %(now)s, owner = NULL, available_at = NULL
    WHERE run_id = %(run_id)s
      AND (status = 'blocked'
           OR (status = 'queued'
               AND NOT EXISTS (SELECT 1 FROM {schema}.journal j
                               WHERE j.run_id = %(run_id)s)))
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM b;

-- run_cancel --
-- Ask a run to cancel; a queued or waiting run becomes claimable now (and is notified).
-- The time of the request (cancel_requested_at) is the first's: a repeat keeps it (one
-- a retry left with the flag cleared is replaced); so is each run_children_* and
-- run_cancel_blocked. So are its reason (cancel_reason) and whose cancel it was
-- (cancelled_with: NULL for the run's own request; run_children_* give a child its
-- parent's id and reason).
WITH c AS (
    UPDATE {schema}.runs
    SET cancel_requested = true, updated_at = %(now)s,
        cancel_requested_at = CASE WHEN cancel_requested
                                   THEN coalesce(cancel_requested_at, %(now)s)
                                   ELSE %(now)s END,
        cancel_reason = CASE WHEN cancel_requested THEN cancel_reason
                             ELSE %(reason)s END,
        cancelled_with = CASE WHEN cancel_requested THEN cancelled_with END,
        available_at = CASE WHEN status IN ('queued', 'waiting') THEN %(now)s
                            ELSE available_at END
    WHERE run_id = %(run_id)s AND status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM c;

-- run_cancel_notify --
-- Tell the worker holding a running run that it was asked to cancel (at commit), so it
-- interrupts it at once instead of at its next heartbeat (a payload holds 8000 bytes
-- at most: a longer id waits for the heartbeat).
SELECT pg_notify(%(channel)s, 'cancel:' || run_id)::text FROM {schema}.runs
WHERE run_id = %(run_id)s AND status = 'running' AND cancel_requested
  AND octet_length(run_id) <= 7000;

-- lease_heartbeat --
-- Extend every lease a worker holds and mark it alive; report which runs it still holds.
-- Rows are locked in run_id order, as journal appends lock them, so the two never
-- deadlock.
WITH touch AS (
    UPDATE {schema}.workers SET heartbeat_at = %(now)s WHERE worker_id = %(worker_id)s),
held AS MATERIALIZED (
    SELECT run_id FROM {schema}.runs
    WHERE owner = %(worker_id)s AND (status = 'running') IS TRUE
    ORDER BY run_id FOR NO KEY UPDATE)
UPDATE {schema}.runs r SET available_at = %(lease_expires)s
FROM held WHERE r.run_id = held.run_id
RETURNING r.run_id, r.cancel_requested;

-- lease_expire_owner --
-- Make a dead worker's runs claimable at once and forget it; returns their ids, sorted
-- (notifies).
WITH e AS (
    UPDATE {schema}.runs SET available_at = %(now)s
    WHERE owner = %(worker_id)s AND (status = 'running') IS TRUE
    RETURNING run_id),
d AS (DELETE FROM {schema}.workers WHERE worker_id = %(worker_id)s)
SELECT {schema}.wake(%(channel)s, (SELECT count(*) FROM e)),
       ARRAY(SELECT run_id FROM e ORDER BY run_id);

-- worker_register --
-- Record a live worker.
INSERT INTO {schema}.workers
    (worker_id, hostname, pid, pid_start, queues, started_at, heartbeat_at)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(pid_start)s, %(queues)s, %(started_at)s,
        %(heartbeat_at)s)
ON CONFLICT (worker_id) DO UPDATE SET
    hostname = excluded.hostname, pid = excluded.pid, pid_start = excluded.pid_start,
    queues = excluded.queues, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at;

-- worker_unregister --
-- A stopping worker hands its runs back to the queue and is forgotten (notifies).
WITH r AS (
    UPDATE {schema}.runs
    SET status = 'queued', owner = NULL, available_at = %(now)s, updated_at = %(now)s
    WHERE owner = %(worker_id)s AND (status = 'running') IS TRUE
    RETURNING 1),
d AS (DELETE FROM {schema}.workers WHERE worker_id = %(worker_id)s)
SELECT {schema}.wake(%(channel)s, count(*)) FROM r;

-- worker_list --
-- Known workers.
SELECT worker_id, hostname, pid, pid_start, queues, started_at, heartbeat_at
FROM {schema}.workers ORDER BY started_at;

-- worker_runs_held --
-- How many running runs each worker holds (runs_owner: only runs with an owner).
SELECT owner, count(*) FROM {schema}.runs
WHERE owner IS NOT NULL AND status = 'running' GROUP BY owner;

-- workflow_register --
-- Record workflow names and their queues.
INSERT INTO {schema}.workflows (name, queue, updated_at)
SELECT n, q, %(now)s FROM unnest(%(names)s::text[], %(queues)s::text[]) AS u(n, q)
ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, updated_at = excluded.updated_at;

-- workflow_list --
-- Registered workflow names and their queues.
SELECT name, queue FROM {schema}.workflows ORDER BY name;

-- next_available_at --
-- The earliest time a run on these queues becomes claimable; for a queue at its limit,
-- the earliest lease expiry of its running runs (so that workers do not spin on runs
-- they may not claim; a run's end wakes them sooner). Runs that are not running are
-- found through runs_claim, lease expiries through runs_held (migration 0008). The runs
-- of %(exclude)s are left out.
WITH lim AS MATERIALIZED (
    SELECT l.queue, l.max_running, h.running, h.expiry
    FROM {schema}.queue_limits l CROSS JOIN LATERAL (
        SELECT count(*) AS running, min(available_at) AS expiry FROM {schema}.runs r
        WHERE r.queue = l.queue AND r.status = 'running') h
    WHERE l.queue = ANY(%(queues)s))
SELECT min(t) FROM (
    -- Per queue, the first entry of runs_claim in order (as the claim reads it): the
    -- earliest of a hundred thousand waiting runs without reading them all.
    SELECT (SELECT r.available_at FROM {schema}.runs r
            WHERE r.queue = q.queue AND r.available_at IS NOT NULL
              AND r.status <> 'running'
              AND (r.version IS NULL OR r.version = %(version)s::text)
              AND (%(workflows)s::text[] IS NULL OR r.workflow = ANY(%(workflows)s::text[]))
              AND (%(exclude)s::text[] IS NULL OR r.run_id <> ALL(%(exclude)s::text[]))
            ORDER BY r.available_at LIMIT 1) AS t
    FROM unnest(%(queues)s::text[]) AS q(queue)
    WHERE q.queue <> ALL(ARRAY(SELECT queue FROM lim WHERE running >= max_running))
    UNION ALL
    SELECT min(available_at) FROM {schema}.runs
    WHERE queue = ANY(%(queues)s) AND available_at IS NOT NULL AND status = 'running'
      AND queue <> ALL(ARRAY(SELECT queue FROM lim WHERE running >= max_running))
      AND (version IS NULL OR version = %(version)s::text)
      AND (%(workflows)s::text[] IS NULL OR workflow = ANY(%(workflows)s::text[]))
      AND (%(exclude)s::text[] IS NULL OR run_id <> ALL(%(exclude)s::text[]))
    UNION ALL
    SELECT expiry FROM lim WHERE running >= max_running) x;

-- run_activity --
-- TestEnv's look (tether.testing): whether a run is running (on any queue) or a queued or
-- waiting run on these queues is due at now, and the earliest later available_at of one
-- of them. Index lookups: runs_held for a running run, and per queue the first entry of
-- runs_claim (queue, available_at) at most now and the first after it (runs_claim holds
-- the runs that are not running and have an available_at: the queued runs and those
-- waiting on a time; an ended run has none). TestEnv read every run at each poll.
SELECT EXISTS (SELECT 1 FROM {schema}.runs WHERE status = 'running')
       OR EXISTS (SELECT 1 FROM unnest(%(queues)s::text[]) AS q(queue) CROSS JOIN LATERAL (
                      SELECT 1 FROM {schema}.runs r
                      WHERE r.queue = q.queue AND r.available_at <= %(now)s
                        AND r.status <> 'running' AND r.status IN ('queued', 'waiting')
                      LIMIT 1) AS due),
       (SELECT min((SELECT r.available_at FROM {schema}.runs r
                    WHERE r.queue = q.queue AND r.available_at > %(now)s
                      AND r.status <> 'running' AND r.status IN ('queued', 'waiting')
                    ORDER BY r.available_at LIMIT 1))
        FROM unnest(%(queues)s::text[]) AS q(queue));

-- run_metrics_set --
-- Replace a run's metrics under the caller's lease.
UPDATE {schema}.runs SET metrics = %(metrics)s, updated_at = %(now)s
WHERE run_id = %(run_id)s AND fencing_token = %(fencing_token)s
  AND (status = 'running') IS TRUE;

-- blob_put --
-- Store texts (one array of keys, one of texts, in key order); a stored key is kept.
INSERT INTO {schema}.blobs (key, value)
SELECT k, v FROM unnest(%(keys)b::text[], %(values)b::text[]) AS u(k, v)
ON CONFLICT (key) DO NOTHING;

-- blob_ref_put_many --
-- Runs reference these texts: (key, run_id) pairs, in that order; written before the
-- texts, in their transaction (see Lifecycle._sweep_blobs).
INSERT INTO {schema}.blob_refs (key, run_id)
SELECT k, r FROM unnest(%(ref_keys)b::text[], %(ref_runs)b::text[]) AS u(k, r)
ON CONFLICT (key, run_id) DO NOTHING;

-- run_metrics_set_many --
-- run_metrics_set for many runs (one array per column, no run twice, rows locked first
-- by run_lock_many); returns the ids of the runs whose metrics it wrote.
UPDATE {schema}.runs r SET metrics = u.metrics, updated_at = u.now
FROM unnest(%(run_id)b::text[], %(fencing_token)b::bigint[], %(metrics)b::text[],
            %(now)b::float8[]) AS u(run_id, fencing_token, metrics, now)
WHERE r.run_id = u.run_id AND r.fencing_token = u.fencing_token
  AND (r.status = 'running') IS TRUE
RETURNING r.run_id;

-- blob_get --
-- The stored texts of these keys.
SELECT key, value FROM {schema}.blobs WHERE key = ANY(%(keys)s::text[]);

-- kv_get --
-- A shared value and its version.
SELECT value, version FROM {schema}.kv WHERE key = %(key)s;

-- kv_insert --
-- Create a shared value at version 1 unless the key exists; returns a row if created.
INSERT INTO {schema}.kv (key, value, version, updated_at)
VALUES (%(key)s, %(value)s, 1, %(now)s)
ON CONFLICT (key) DO NOTHING
RETURNING 1;

-- kv_update --
-- Replace a shared value if its version is still the one the caller read (a concurrent
-- update re-checks the version on the row it committed); returns a row if replaced.
UPDATE {schema}.kv SET value = %(value)s, version = version + 1, updated_at = %(now)s
WHERE key = %(key)s AND version = %(version)s
RETURNING 1;

-- rate_acquire --
-- Take from a token bucket (see the function); 0 when taken, else seconds to wait.
SELECT {schema}.rate_acquire(%(key)s, %(limit)s, %(period)s, %(amount)s, %(now)s);

-- queue_limit_set --
-- Set a queue's concurrency limit (notifies: a higher limit may let workers claim).
WITH s AS (
    INSERT INTO {schema}.queue_limits AS l (queue, max_running, updated_at)
    VALUES (%(queue)s, %(limit)s, %(now)s)
    ON CONFLICT (queue) DO UPDATE SET
        limit_before_pause = CASE WHEN excluded.max_running <> 0 THEN NULL
                                  WHEN l.max_running = 0 THEN l.limit_before_pause
                                  ELSE l.max_running END,
        max_running = excluded.max_running, updated_at = excluded.updated_at
    RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM s;

-- queue_resume --
-- Give a paused queue back the limit it held before its pause (none: its row goes), in
-- one statement: whether it was paused, the limit it has now (notifies: workers may
-- claim again). The row is locked first, so a limit set meanwhile is either before
-- (read here) or after (it wins).
WITH p AS (
    SELECT limit_before_pause FROM {schema}.queue_limits
    WHERE queue = %(queue)s AND max_running = 0 FOR UPDATE),
d AS (
    DELETE FROM {schema}.queue_limits
    WHERE queue = %(queue)s AND EXISTS (SELECT 1 FROM p WHERE limit_before_pause IS NULL)
    RETURNING 1),
u AS (
    UPDATE {schema}.queue_limits SET max_running = p.limit_before_pause,
                                     limit_before_pause = NULL, updated_at = %(now)s
    FROM p WHERE queue = %(queue)s AND p.limit_before_pause IS NOT NULL
    RETURNING max_running)
SELECT EXISTS (SELECT 1 FROM p), (SELECT max_running FROM u),
       {schema}.wake(%(channel)s, (SELECT count(*) FROM p));

-- queue_pauses --
-- Every paused queue (the limit 0) and the limit it held before its pause (NULL: none).
SELECT queue, limit_before_pause FROM {schema}.queue_limits WHERE max_running = 0
ORDER BY queue;

-- queue_limit_delete --
-- Remove a queue's concurrency limit (notifies: workers may claim more).
WITH d AS (DELETE FROM {schema}.queue_limits WHERE queue = %(queue)s RETURNING 1)
SELECT {schema}.wake(%(channel)s, count(*)) FROM d;

-- signal_pending --
-- Whether a signal of a name waits unconsumed (the signals_pending index answers it).
SELECT EXISTS (SELECT 1 FROM {schema}.signals
               WHERE run_id = %(run_id)s AND name = %(name)s AND consumed_position IS NULL);

-- queue_limits --
-- Every queue with a concurrency limit.
SELECT queue, max_running FROM {schema}.queue_limits ORDER BY queue;

-- run_publish --
-- Send a live event's parts to its run's channel, in order, in one transaction.
SELECT {schema}.publish(%(channel)s, %(parts)s::text[]);

-- server_time --
-- The server's clock (epoch seconds): the one clock every worker of the store reads
-- leases and timers off (tether._clock.SyncedClock).
SELECT extract(epoch FROM clock_timestamp())::float8;

-- session_end --
-- End the session of server process %(pid)s, if it is still there (this store's role and
-- database, a client's): the session a commit that went unanswered was sent on, which a
-- network cut leaves alive on the server, perhaps with the COMMIT still to read. A row
-- while it is there (pg_terminate_backend: signalled), none once it has ended (it then
-- commits nothing more: a commit under way when the signal comes ends first).
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid = %(pid)s AND datname = current_database() AND usename = current_user
  AND backend_type = 'client backend';
