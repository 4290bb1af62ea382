-- Queries of the control plane (`tether serve`): listing, live events, metrics.
--
-- `{_name|a,b,c}` in a query writes the fragment `_name` (a `-- _name --` section, defined
-- above its first use) once per value of the list, each copy with the value where the
-- fragment says `{status}`, the copies joined by UNION ALL: `{_all_branch|queued,running}`
-- is `_all_branch` with 'queued', UNION ALL, `_all_branch` with 'running'. A plain
-- `{_name}` writes the fragment once, as it is.

-- run_search --
-- Runs matching optional filters, newest first, after a (created_at, run_id) cursor.
-- With migration 0003's columns (run_get's), so that a listed fork says its origin
-- (forked_from, forked_at): the runs page, GET /api/v1/runs. Same rows, same plan.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM tether_runs
WHERE (:status IS NULL OR status = :status)
  AND (:workflow IS NULL OR workflow = :workflow)
  AND (:queue IS NULL OR queue = :queue)
  AND (:parent IS NULL OR parent_run_id = :parent)
  AND (:text IS NULL OR instr(run_id, :text) > 0)
  AND (:before_at IS NULL OR created_at < :before_at
       OR (created_at = :before_at AND run_id < :before_id))
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- run_search_parent --
-- run_search with a parent (and perhaps a status, a queue or text; a workflow is
-- run_search_workflow's): the parent's children through tether_runs_parent, sorted.
-- run_search's `:parent IS NULL OR parent_run_id = :parent` keeps SQLite off that
-- index: every run was read for each list of children, and a run page's tree asks for
-- one per child it draws (110,000 runs: 55-65 ms each, 3.6-4 s for the tree's 100).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM tether_runs
WHERE parent_run_id = :parent
  AND (:status IS NULL OR status = :status)
  AND (:queue IS NULL OR queue = :queue)
  AND (:text IS NULL OR instr(run_id, :text) > 0)
  AND (:before_at IS NULL OR created_at < :before_at
       OR (created_at = :before_at AND run_id < :before_id))
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- _page_before_cursor --
-- The end of each per-status branch below: its runs before the (created_at, run_id)
-- cursor, newest first, at most a page.
         AND created_at <= coalesce(:before_at, 9e999)
         AND (:before_at IS NULL OR created_at < :before_at
              OR (created_at = :before_at AND run_id < :before_id))
       ORDER BY created_at DESC, run_id DESC LIMIT :limit

-- _all_branch --
-- run_search_all's branch of one status.
SELECT * FROM (SELECT * FROM tether_runs WHERE status = '{status}'
         AND (:status IS NULL OR :status = '{status}')
{_page_before_cursor})

-- run_search_all --
-- run_search without filters, or with a status only (the runs page, /healthz, a cursor's
-- next page; a branch of another status ends at once on its constant test): the newest
-- runs of each status through tether_runs_status (status, created_at), or for 'running' through
-- tether_runs_held (few rows: the runs workers hold), merged. One ordered scan of all runs
-- (run_search's plan when nothing narrows it: 1.1 M runs, 1.2 s) needs an index on
-- created_at that every start would update. The statuses are RunStatus's, all of them.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_all_branch|queued,running,waiting,completed,failed,cancelled,blocked})
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- _queue_branch --
-- run_search_queue's branch of a status tether_runs_queue leaves out.
SELECT * FROM (SELECT * FROM tether_runs WHERE status = '{status}' AND +queue = :queue
         AND (:status IS NULL OR :status = '{status}')
{_page_before_cursor})

-- _queue_indexed_branch --
-- run_search_queue's branch of a status tether_runs_queue holds: with the index's
-- predicate, without which SQLite does not use it.
SELECT * FROM (SELECT * FROM tether_runs WHERE queue = :queue AND status = '{status}'
         AND status NOT IN ('queued', 'running', 'waiting')
         AND (:status IS NULL OR :status = '{status}')
{_page_before_cursor})

-- run_search_queue --
-- run_search with a queue alone (or a queue and a status): run_search_all within the
-- queue. The newest runs of the queue in each status through tether_runs_queue (queue,
-- status, created_at) (migration 0017; its predicate written out in each branch it
-- serves, _queue_indexed_branch), or for 'queued', 'running' and 'waiting', which it
-- leaves out, through tether_runs_status, read until the queue's newest are found
-- (`+queue`: tether_runs_claim and tether_runs_held order by available_at, not
-- creation), merged. Before tether_runs_queue every branch read tether_runs_status: all
-- the runs of a status the queue has none of, and every run for a queue with no run at
-- all (1.1 M runs: 0.27-0.52 s a page); run_search scanned every run for a queue
-- (0.4-0.6 s). With a parent or text too, run_search serves it.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_queue_branch|queued,running,waiting}
      UNION ALL
      {_queue_indexed_branch|completed,failed,cancelled,blocked})
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- _workflow_filters --
-- The rest of a run_search_workflow branch (of status {status}): the other filters.
         AND (:status IS NULL OR :status = '{status}')
         AND (:queue IS NULL OR queue = :queue)
         AND (:parent IS NULL OR parent_run_id = :parent)
         AND (:text IS NULL OR instr(run_id, :text) > 0)
{_page_before_cursor}

-- _workflow_branch --
-- run_search_workflow's branch of a status tether_runs_workflow leaves out.
SELECT * FROM (SELECT * FROM tether_runs WHERE workflow = :workflow
         AND status = '{status}'
{_workflow_filters})

-- _workflow_indexed_branch --
-- run_search_workflow's branch of a status tether_runs_workflow holds: with the index's
-- predicate, without which SQLite does not use it.
SELECT * FROM (SELECT * FROM tether_runs WHERE workflow = :workflow
         AND status = '{status}' AND status NOT IN ('queued', 'running', 'waiting')
{_workflow_filters})

-- run_search_workflow --
-- run_search with a workflow (and perhaps other filters): the newest runs of the workflow
-- in each status through tether_runs_workflow (workflow, status, created_at) (migration
-- 0016; its predicate, written out in each branch it serves, _workflow_indexed_branch,
-- is what lets SQLite use it), or for 'queued', 'running' and 'waiting', which it
-- leaves out, through tether_runs_status (the backlog, the runs workers hold and the
-- parked runs: read until the workflow's newest are found), merged; a status filter
-- leaves one branch (the others end at their constant test).
-- run_search's plan scanned every run for a workflow and sorted its runs (1.1 M runs:
-- 0.3-5 s a page).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_workflow_branch|queued,running,waiting}
      UNION ALL
      {_workflow_indexed_branch|completed,failed,cancelled,blocked})
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- run_children_many --
-- The children of several runs in one query (a run page's tree asks for those of all
-- the runs it draws at a level; it asked once per run: up to 100 queries a redraw):
-- each parent's children through tether_runs_parent, numbered newest first
-- (run_search's order); the first `limit` of each come back whole (a row per run, its
-- parent first, the figures' columns NULL), the others one row per parent and status,
-- counted with the sums of their own cost and tokens (the run's columns NULL). The runs drawn are read again by rowid, the others never
-- read out. :parents is a JSON array of ids.
WITH kids AS MATERIALIZED (
    SELECT rowid AS rid, parent_run_id, status,
           json_extract(metrics, '$."cost.usd"') AS cost,
           json_extract(metrics, '$."tokens.input"') AS tokens_in,
           json_extract(metrics, '$."tokens.output"') AS tokens_out,
           row_number() OVER (PARTITION BY parent_run_id
                              ORDER BY created_at DESC, run_id DESC) AS n
    FROM tether_runs
    WHERE parent_run_id IN (SELECT value FROM json_each(:parents)))
SELECT k.parent_run_id, NULL, NULL, NULL, NULL,
       r.run_id, r.workflow, r.queue, r.status, r.input, r.created_at, r.updated_at,
       r.result, r.error, r.owner, r.fencing_token, r.available_at, r.cancel_requested,
       r.waiting_for, r.status_info, r.parent_run_id, r.finished_at, r.parent_position,
       r.on_parent_cancel, r.metrics, r.version, r.forked_from, r.forked_at,
       r.generation, r.erased_at
FROM kids AS k JOIN tether_runs AS r ON r.rowid = k.rid
WHERE k.n <= :limit
UNION ALL
SELECT parent_run_id, status, count(*), coalesce(sum(cost), 0),
       coalesce(sum(tokens_in), 0) + coalesce(sum(tokens_out), 0),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM kids
WHERE n > :limit
GROUP BY parent_run_id, status;

-- run_events_read --
-- A run's stored events after an event id, oldest first. Rows of kinds 's' and 'o' hold
-- only the values (migration 0011): their JSON is built here, as the triggers of
-- migrations 0004 and 0010 built it.
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT event_id,
       CASE kind WHEN 's' THEN 'status' WHEN 'o' THEN 'op' ELSE kind END,
       CASE kind
           WHEN 's' THEN json_object(
               'status', CASE WHEN instr(data, ' ') > 0
                              THEN substr(data, 1, instr(data, ' ') - 1) ELSE data END,
               'waiting_for', CASE WHEN instr(data, ' ') > 0
                                   THEN substr(data, instr(data, ' ') + 1) END)
           WHEN 'o' THEN json_object('position', data ->> 0, 'kind', data ->> 3,
                                     'name', data ->> 4, 'status', data ->> 2,
                                     'attempts', data ->> 1)
           ELSE data END
FROM tether_run_events
WHERE run_id = +:run_id AND event_id > :after ORDER BY event_id LIMIT :limit + 0;

-- run_event_exists --
-- Whether an event id is one of the run's events (the primary key's lookup).
SELECT EXISTS (SELECT 1 FROM tether_run_events
               WHERE run_id = :run_id AND event_id = :event_id);

-- run_events_latest --
-- A run's newest events (of the kinds in the JSON array :kinds alone unless NULL),
-- oldest first: the primary key (run_id, event_id) read backwards. Their JSON is built
-- as in run_events_read.
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
SELECT event_id,
       CASE kind WHEN 's' THEN 'status' WHEN 'o' THEN 'op' ELSE kind END,
       CASE kind
           WHEN 's' THEN json_object(
               'status', CASE WHEN instr(data, ' ') > 0
                              THEN substr(data, 1, instr(data, ' ') - 1) ELSE data END,
               'waiting_for', CASE WHEN instr(data, ' ') > 0
                                   THEN substr(data, instr(data, ' ') + 1) END)
           WHEN 'o' THEN json_object('position', data ->> 0, 'kind', data ->> 3,
                                     'name', data ->> 4, 'status', data ->> 2,
                                     'attempts', data ->> 1)
           ELSE data END
FROM (SELECT event_id, kind, data FROM tether_run_events
      WHERE run_id = +:run_id
        AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
      ORDER BY event_id DESC LIMIT :limit + 0)
ORDER BY event_id;

-- run_event_chunk --
-- Store a streamed LLM chunk as an event of its run (its next event id: see migration 0010).
-- (+:x, :limit + 0: no new compile of the statement for each new value; see h148 in
-- docs/performance-log.md.)
INSERT INTO tether_run_events (run_id, event_id, kind, data) VALUES (:run_id,
    coalesce((SELECT max(event_id) FROM tether_run_events WHERE run_id = +:run_id),
             (SELECT CAST(created_at * 1000000 AS INTEGER) FROM tether_runs
              WHERE run_id = +:run_id), 0) + 1,
    'chunk', :data);

-- stats_workflows --
-- Runs by workflow and status (summed per status: runs by status). The ended runs are
-- read from the partial index tether_runs_workflow (workflow, status, created_at) alone,
-- in its order (its predicate, written as it is, is what lets SQLite use it); the
-- unfinished ones through tether_runs_status. One GROUP BY over the table scanned it and
-- sorted every run (56 ms against 7 ms on 100,000 runs).
SELECT workflow, status, count(*) FROM tether_runs
WHERE status NOT IN ('queued', 'running', 'waiting') GROUP BY workflow, status
UNION ALL
SELECT workflow, status, count(*) FROM tether_runs
WHERE status IN ('queued', 'running', 'waiting') GROUP BY workflow, status;

-- stats_queues --
-- Per queue: queued runs, and the earliest time one of them became claimable (its
-- available_at: a run queued again by tether retry or resume, a worker's hand-back or
-- continue_as_new waits since then, not since it was created).
SELECT queue, count(*), min(coalesce(available_at, created_at)) FROM tether_runs
WHERE status = 'queued' GROUP BY queue;

-- queue_counts --
-- Per queue and unfinished status: how many runs, and of the queued ones how many are
-- due now (tether queues). One select per status, so each reads its own index
-- (tether_runs_status for queued and waiting, tether_runs_held for running) and no ended run.
SELECT queue, 'queued', count(*),
       sum(coalesce(available_at, created_at) <= :now)
FROM tether_runs WHERE status = 'queued' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), 0 FROM tether_runs
WHERE status = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'waiting', count(*), 0 FROM tether_runs
WHERE status = 'waiting' GROUP BY queue;

-- stats_steps --
-- Finished steps of the runs kept (all generations), per step name: how many, their total
-- seconds, and how many took at most each bound (the bounds are STEP_BUCKETS in
-- tether.store._port); their sums are those of all steps. One scan, as without the names.
-- metric_totals adds those of purged runs. A duration is a difference of wall-clock
-- times (stamped by the workers, perhaps two of them): one the clock stepped back across
-- counts as 0, so that the sum never goes down (metric_totals_of clamps the same way).
-- A fork's entries copied from its source (fencing token 0, which no claim gives) are the
-- source's steps, counted with it: not again (an entry archived before the archive kept
-- tokens, NULL, counts).
SELECT name, count(*), coalesce(sum(d), 0.0),
       count(*) FILTER (WHERE d <= 0.005),
       count(*) FILTER (WHERE d <= 0.01),
       count(*) FILTER (WHERE d <= 0.025),
       count(*) FILTER (WHERE d <= 0.05),
       count(*) FILTER (WHERE d <= 0.1),
       count(*) FILTER (WHERE d <= 0.25),
       count(*) FILTER (WHERE d <= 0.5),
       count(*) FILTER (WHERE d <= 1),
       count(*) FILTER (WHERE d <= 2.5),
       count(*) FILTER (WHERE d <= 5),
       count(*) FILTER (WHERE d <= 10),
       count(*) FILTER (WHERE d <= 30),
       count(*) FILTER (WHERE d <= 60)
FROM (SELECT name, max(finished_at - started_at, 0.0) AS d FROM tether_journal
      WHERE kind = 'step' AND status <> 'pending' AND started_at IS NOT NULL
        AND finished_at IS NOT NULL AND fencing_token IS NOT 0
      UNION ALL  -- (the journals of earlier generations: continue_as_new)
      SELECT name, max(finished_at - started_at, 0.0) FROM tether_journal_archive
      WHERE kind = 'step' AND status <> 'pending' AND started_at IS NOT NULL
        AND finished_at IS NOT NULL AND fencing_token IS NOT 0) AS steps
GROUP BY name;

-- stats_run_durations --
-- Ended runs per workflow and bucket of their seconds from creation to end: the index
-- of the first bound of RUN_BUCKETS (tether.store._port) they took at most (13: more
-- than the last), how many, and their total seconds; run_durations_of makes the
-- histogram of them. One CASE per run, not a count per bound (13 FILTERs: twice as
-- long on PostgreSQL, 100,000 runs). metric_totals adds those of purged and retried
-- runs. A duration the clock stepped back across counts as 0 (run_end_totals_of
-- clamps the same way). A blocked run has a finished_at too, and has not ended: not
-- counted.
SELECT workflow,
       CASE
            WHEN d <= 0.1 THEN 0
            WHEN d <= 0.5 THEN 1
            WHEN d <= 1 THEN 2
            WHEN d <= 5 THEN 3
            WHEN d <= 10 THEN 4
            WHEN d <= 30 THEN 5
            WHEN d <= 60 THEN 6
            WHEN d <= 300 THEN 7
            WHEN d <= 900 THEN 8
            WHEN d <= 1800 THEN 9
            WHEN d <= 3600 THEN 10
            WHEN d <= 21600 THEN 11
            WHEN d <= 86400 THEN 12
            ELSE 13 END AS bucket,
       count(*), coalesce(sum(d), 0.0)
FROM (SELECT workflow, max(coalesce(finished_at, created_at) - created_at, 0.0) AS d
      FROM tether_runs WHERE status IN ('completed', 'failed', 'cancelled')) AS ended
GROUP BY workflow, bucket;

-- stats_metrics --
-- LLM tokens and cost over all runs: spent, and saved by replay.
SELECT coalesce(sum(json_extract(metrics, '$."tokens.input"')), 0),
       coalesce(sum(json_extract(metrics, '$."tokens.output"')), 0),
       coalesce(sum(json_extract(metrics, '$."cost.usd"')), 0),
       coalesce(sum(json_extract(metrics, '$."saved.tokens.input"')), 0),
       coalesce(sum(json_extract(metrics, '$."saved.tokens.output"')), 0),
       coalesce(sum(json_extract(metrics, '$."saved.cost.usd"')), 0),
       coalesce(sum(json_extract(metrics, '$."llm.calls"')), 0)
FROM tether_runs WHERE metrics IS NOT NULL;

-- stats_workers --
-- Workers that heartbeated since a time.
SELECT count(*) FROM tether_workers WHERE heartbeat_at >= :alive_since;

-- metric_totals --
-- What purges took out of the cumulative figures of /metrics (metric_totals_of).
SELECT name, value FROM tether_metric_totals;

-- run_list_awaiting_approval --
-- The runs waiting for an approval (waiting_for 'signal approval', tether.ai's approval
-- wait), oldest first, after a (created_at, run_id) cursor: the partial index
-- tether_runs_awaiting_approval (migration 0015) holds exactly these. The literal
-- predicate is what lets SQLite use it, and INDEXED BY makes it: without statistics the
-- planner took tether_runs_status (every waiting run, then a sort).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics
FROM tether_runs INDEXED BY tether_runs_awaiting_approval
WHERE status = 'waiting' AND waiting_for = 'signal approval'
  AND (created_at, run_id) > (:after_at, :after_id)
ORDER BY created_at, run_id
LIMIT :limit;

-- signals_pending_many --
-- The pending signals of a name of several runs (a JSON array of run ids), oldest first
-- per run: one search of the pending-signals index per run.
SELECT s.run_id, s.payload
FROM json_each(:run_ids) AS j
JOIN tether_signals AS s INDEXED BY tether_signals_pending
  ON s.run_id = j.value AND s.name = :name AND s.consumed_position IS NULL
ORDER BY s.run_id, s.signal_id;

-- run_count_awaiting_approval --
-- How many of run_list_awaiting_approval's runs a person may answer at now (not
-- claimable: available_at unset or later; or claimable with no approval signal waiting
-- for it: its watch timed out, unanswered), the oldest `limit` at most, and how many of
-- them are at or before a (created_at, run_id) cursor: the approvals inbox's count and
-- its page's place. The same partial index (INDEXED BY), read in its order and cut.
SELECT count(*),
       sum(CASE WHEN (created_at, run_id) <= (:upto_at, :upto_id) THEN 1 ELSE 0 END)
FROM (SELECT created_at, run_id
      FROM tether_runs INDEXED BY tether_runs_awaiting_approval
      WHERE status = 'waiting' AND waiting_for = 'signal approval'
        AND (available_at IS NULL OR available_at > :now
             OR NOT EXISTS (SELECT 1 FROM tether_signals AS s
                            WHERE s.run_id = tether_runs.run_id AND s.name = 'approval'
                              AND s.consumed_position IS NULL))
      ORDER BY created_at, run_id
      LIMIT :limit);
