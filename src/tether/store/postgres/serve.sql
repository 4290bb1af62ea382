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
-- The cursor's bound alone (created_at <= ...) is a range of runs_status for a status
-- filter: without it a page from the middle of 1.1 M runs read every newer run of that
-- status (0.33-0.52 s for 'completed').
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM {schema}.runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(parent)s::text IS NULL OR parent_run_id = %(parent)s)
  AND (%(text)s::text IS NULL OR strpos(run_id, %(text)s) > 0)
  AND created_at <= coalesce(%(before_at)s::float8, 'infinity')
  AND (%(before_at)s::float8 IS NULL OR created_at < %(before_at)s
       OR (created_at = %(before_at)s AND run_id < %(before_id)s))
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;

-- _page_before_cursor --
-- The end of each per-status branch below: its runs before the (created_at, run_id)
-- cursor, newest first, at most a page.
         AND created_at <= coalesce(%(before_at)s::float8, 'infinity')
         AND (%(before_at)s::float8 IS NULL OR created_at < %(before_at)s
              OR (created_at = %(before_at)s AND run_id < %(before_id)s::text))
       ORDER BY created_at DESC, run_id DESC LIMIT %(limit)s

-- _all_branch --
-- run_search_all's branch of one status.
(SELECT * FROM {schema}.runs WHERE status = '{status}'
{_page_before_cursor})

-- run_search_all --
-- run_search without filters (the runs page, /healthz, a cursor's next page): the newest
-- runs of each status through runs_status (status, created_at), or for 'running' through
-- runs_held (few rows: the runs workers hold), merged. One ordered scan of all runs
-- (run_search's plan when nothing narrows it: 1.1 M runs, 1.2 s) needs an index on
-- created_at that every start would update. The statuses are RunStatus's, all of them.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_all_branch|queued,running,waiting,completed,failed,cancelled,blocked}) AS r
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;

-- _workflow_branch --
-- run_search_workflow's branch of one status.
(SELECT * FROM {schema}.runs WHERE workflow = %(workflow)s AND status = '{status}'
         AND (%(status)s::text IS NULL OR %(status)s = '{status}')
         AND (%(queue)s::text IS NULL OR queue = %(queue)s)
         AND (%(parent)s::text IS NULL OR parent_run_id = %(parent)s)
         AND (%(text)s::text IS NULL OR strpos(run_id, %(text)s) > 0)
{_page_before_cursor})

-- run_search_workflow --
-- run_search with a workflow (and perhaps other filters): the newest runs of the workflow
-- in each status through runs_workflow (workflow, status, created_at) (migration 0015),
-- or for 'queued', 'running' and 'waiting', which it leaves out, through runs_status and
-- runs_held (the backlog, the runs workers hold and the parked runs: read until the
-- workflow's newest are found), merged; a status filter leaves one branch (the others
-- end at their one-time test).
-- run_search's plan scanned every run for a workflow (1.1 M runs: 0.25-0.85 s), or,
-- with a status, every run of that status newer than a cursor.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_workflow_branch|queued,running,waiting,completed,failed,cancelled,blocked}) AS r
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;

-- _queue_branch --
-- run_search_queue's branch of one status.
(SELECT * FROM {schema}.runs WHERE queue = %(queue)s AND status = '{status}'
         AND (%(status)s::text IS NULL OR %(status)s = '{status}')
{_page_before_cursor})

-- run_search_queue --
-- run_search with a queue alone (or a queue and a status): the newest runs of the queue
-- in each status through runs_queue (queue, status, created_at) (migration 0017), or for
-- 'queued' and 'waiting', which it leaves out, through runs_status (status, created_at)
-- (the backlog and the parked runs, read until the queue's newest are found) and for
-- 'running' through runs_held (queue, available_at), merged as run_search_all; a status
-- filter leaves one branch (the others end at their one-time test). Before runs_queue
-- every branch read runs_status: all the runs of a status the queue has none of, and
-- every run for a queue with no run at all (1.1 M runs: 0.38 s a page); run_search's
-- plan scanned every run (0.25-0.45 s for any queue). With a queue and parent or text
-- run_search still serves it (runs_parent; a substring of the id is no index range).
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics,
       version, forked_from, forked_at, generation, erased_at
FROM (
      {_queue_branch|queued,running,waiting,completed,failed,cancelled,blocked}) AS r
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;

-- run_children_many --
-- The children of several runs in one round trip (a run page's tree asks for those of
-- all the runs it draws at a level; it asked once per run: up to 100 round trips a
-- redraw, ~0.8 ms each): each parent's children through runs_parent, numbered newest
-- first (run_search's order); the first `limit` of each come back whole (a row per
-- run, its parent first, the figures' columns NULL), the others one row per parent and
-- status, counted with the sums of their own cost and tokens (the run's columns NULL). The runs drawn are read again by their key, the
-- others never read out. Each child's metrics are parsed once, as jsonb (three `->>` of
-- `metrics::json` lex the text three times: 10,000 children's, 22 ms against 15.5).
WITH kids AS MATERIALIZED (
    SELECT run_id, parent_run_id, status,
           (m->>'cost.usd')::float8 AS cost,
           (m->>'tokens.input')::float8 AS tokens_in,
           (m->>'tokens.output')::float8 AS tokens_out,
           row_number() OVER (PARTITION BY parent_run_id
                              ORDER BY created_at DESC, run_id DESC) AS n
    FROM {schema}.runs CROSS JOIN LATERAL (SELECT metrics::jsonb AS m OFFSET 0) AS j
    WHERE parent_run_id = ANY(%(parents)s::text[]))
SELECT k.parent_run_id, NULL::text, NULL::bigint, NULL::float8, NULL::float8,
       r.run_id, r.workflow, r.queue, r.status, r.input, r.created_at, r.updated_at,
       r.result, r.error, r.owner, r.fencing_token, r.available_at, r.cancel_requested,
       r.waiting_for, r.status_info, r.parent_run_id, r.finished_at, r.parent_position,
       r.on_parent_cancel, r.metrics, r.version, r.forked_from, r.forked_at,
       r.generation, r.erased_at
FROM kids AS k JOIN {schema}.runs AS r ON r.run_id = k.run_id
WHERE k.n <= %(limit)s
UNION ALL
SELECT parent_run_id, status, count(*), coalesce(sum(cost), 0),
       coalesce(sum(tokens_in), 0) + coalesce(sum(tokens_out), 0),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM kids
WHERE n > %(limit)s
GROUP BY parent_run_id, status;

-- run_events_read --
-- A run's stored events after a cursor, in the order in which they become visible: the
-- rows of migration 0004's era by (txid, event_id), then the rest by event_id alone
-- (txid NULL; migration 0013: per run, ids are taken in commit order). A cursor of the
-- first kind has both txid and event_id, one of the second kind only after (txid NULL).
-- Each part is a range of an index, read in its order: the older rows' run_events_run_txid
-- (run_id, txid, event_id), the newer rows' run_events_key (the run id's hash, event_id;
-- migration 0018: the run id itself is checked too). Rows of kinds 's' and 'o' hold only
-- the values (migration 0007): their JSON is built here, as the triggers of migration
-- 0004 built it.
SELECT txid::text, event_id,
       CASE kind WHEN 's' THEN 'status' WHEN 'o' THEN 'op' ELSE kind END,
       CASE kind
           WHEN 's' THEN json_build_object(
               'status', split_part(data, ' ', 1),
               'waiting_for', CASE WHEN strpos(data, ' ') > 0
                                   THEN substr(data, strpos(data, ' ') + 1) END)::text
           WHEN 'o' THEN (
               SELECT json_build_object('position', m[1]::integer, 'kind', m[4],
                                        'name', m[5], 'status', m[3],
                                        'attempts', m[2]::integer)::text
               FROM regexp_match(data, '^(-?\d+) (-?\d+) (\S*) (\S*) (.*)$') AS r(m))
           ELSE data END
FROM ((SELECT txid, event_id, kind, data FROM {schema}.run_events
       WHERE run_id = %(run_id)s AND txid IS NOT NULL
         AND (txid, event_id) > (%(txid)s::xid8, %(event_id)s)
       ORDER BY txid, event_id LIMIT %(limit)s)
      UNION ALL
      (SELECT txid, event_id, kind, data FROM {schema}.run_events
       WHERE hashtextextended(run_id, 0) = hashtextextended(%(run_id)s, 0)
         AND run_id = %(run_id)s AND txid IS NULL AND event_id > %(after)s
       ORDER BY event_id LIMIT %(limit)s)) AS e
ORDER BY e.txid, e.event_id LIMIT %(limit)s;  -- (e.txid: the xid8, not the text above)

-- run_event_exists --
-- Whether an event id is one of the run's events: <event_id> (txid NULL, migration
-- 0013), or <txid>-<event_id> for a row stored before. A lookup of run_events_key.
SELECT EXISTS (SELECT 1 FROM {schema}.run_events
               WHERE hashtextextended(run_id, 0) = hashtextextended(%(run_id)s, 0)
                 AND run_id = %(run_id)s AND txid IS NULL AND event_id = %(event_id)s);

-- run_event_exists_txid --
-- run_event_exists for an id <txid>-<event_id> (a row stored before migration 0013).
SELECT EXISTS (SELECT 1 FROM {schema}.run_events
               WHERE run_id = %(run_id)s AND txid IS NOT NULL AND txid = %(txid)s::xid8
                 AND event_id = %(event_id)s);

-- run_events_latest --
-- A run's newest events (of the kinds %(kinds)s alone unless NULL), in run_events_read's
-- order, read backwards: the rows stored since migration 0013 (run_events_key), then the
-- older ones (run_events_run_txid), then put back in order. Their JSON is built as in
-- run_events_read.
SELECT txid::text, event_id,
       CASE kind WHEN 's' THEN 'status' WHEN 'o' THEN 'op' ELSE kind END,
       CASE kind
           WHEN 's' THEN json_build_object(
               'status', split_part(data, ' ', 1),
               'waiting_for', CASE WHEN strpos(data, ' ') > 0
                                   THEN substr(data, strpos(data, ' ') + 1) END)::text
           WHEN 'o' THEN (
               SELECT json_build_object('position', m[1]::integer, 'kind', m[4],
                                        'name', m[5], 'status', m[3],
                                        'attempts', m[2]::integer)::text
               FROM regexp_match(data, '^(-?\d+) (-?\d+) (\S*) (\S*) (.*)$') AS r(m))
           ELSE data END
FROM (SELECT * FROM ((SELECT txid, event_id, kind, data FROM {schema}.run_events
                       WHERE hashtextextended(run_id, 0) = hashtextextended(%(run_id)s, 0)
                         AND run_id = %(run_id)s AND txid IS NULL
                         AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
                       ORDER BY event_id DESC LIMIT %(limit)s)
                      UNION ALL
                      (SELECT txid, event_id, kind, data FROM {schema}.run_events
                       WHERE run_id = %(run_id)s AND txid IS NOT NULL
                         AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
                       ORDER BY txid DESC, event_id DESC LIMIT %(limit)s)) AS u
      ORDER BY txid DESC NULLS FIRST, event_id DESC LIMIT %(limit)s) AS e
ORDER BY e.txid NULLS LAST, e.event_id;

-- run_publish_stored --
-- Store a streamed chunk as an event and send its parts to the run's channel.
SELECT {schema}.publish_stored(%(run_id)s, %(channel)s, %(data)s, %(parts)s::text[]);

-- stats_workflows --
-- Runs by workflow and status (summed per status: runs by status): a parallel scan of
-- runs, as fast as the count by status alone (44 ms on 100,000 runs; reading the ended
-- runs from the partial index runs_workflow left the unfinished ones to a scan anyway).
SELECT workflow, status, count(*) FROM {schema}.runs GROUP BY workflow, status;

-- stats_queues --
-- Per queue: queued runs, and the earliest time one of them became claimable (its
-- available_at: a run queued again by tether retry or resume, a worker's hand-back or
-- continue_as_new waits since then, not since it was created).
SELECT queue, count(*), min(coalesce(available_at, created_at)) FROM {schema}.runs
WHERE status = 'queued' GROUP BY queue;

-- queue_counts --
-- Per queue and unfinished status: how many runs, and of the queued ones how many are
-- due now (tether queues). One select per status, so each reads its own index
-- (runs_status for queued and waiting, runs_held for running) and no ended run.
SELECT queue, 'queued'::text, count(*),
       count(*) FILTER (WHERE coalesce(available_at, created_at) <= %(now)s)
FROM {schema}.runs WHERE status = 'queued' GROUP BY queue
UNION ALL
SELECT queue, 'running'::text, count(*), 0 FROM {schema}.runs
WHERE status = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'waiting'::text, count(*), 0 FROM {schema}.runs
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
FROM (SELECT name, greatest(finished_at - started_at, 0.0) AS d FROM {schema}.journal
      WHERE kind = 'step' AND status <> 'pending' AND started_at IS NOT NULL
        AND finished_at IS NOT NULL AND fencing_token IS DISTINCT FROM 0
      UNION ALL  -- (the journals of earlier generations: continue_as_new)
      SELECT name, greatest(finished_at - started_at, 0.0) FROM {schema}.journal_archive
      WHERE kind = 'step' AND status <> 'pending' AND started_at IS NOT NULL
        AND finished_at IS NOT NULL AND fencing_token IS DISTINCT FROM 0) AS steps
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
FROM (SELECT workflow, greatest(coalesce(finished_at, created_at) - created_at, 0.0) AS d
      FROM {schema}.runs WHERE status IN ('completed', 'failed', 'cancelled')) AS ended
GROUP BY workflow, bucket;

-- stats_metrics --
-- LLM tokens and cost over all runs: spent, and saved by replay.
SELECT coalesce(sum((metrics::json->>'tokens.input')::float8), 0),
       coalesce(sum((metrics::json->>'tokens.output')::float8), 0),
       coalesce(sum((metrics::json->>'cost.usd')::float8), 0),
       coalesce(sum((metrics::json->>'saved.tokens.input')::float8), 0),
       coalesce(sum((metrics::json->>'saved.tokens.output')::float8), 0),
       coalesce(sum((metrics::json->>'saved.cost.usd')::float8), 0),
       coalesce(sum((metrics::json->>'llm.calls')::float8), 0)
FROM {schema}.runs WHERE metrics IS NOT NULL;

-- stats_workers --
-- Workers that heartbeated since a time.
SELECT count(*) FROM {schema}.workers WHERE heartbeat_at >= %(since)s;

-- metric_totals --
-- What purges took out of the cumulative figures of /metrics (metric_totals_of).
SELECT name, value FROM {schema}.metric_totals;

-- run_list_awaiting_approval --
-- The runs waiting for an approval (waiting_for 'signal approval', tether.ai's approval
-- wait), oldest first, after a (created_at, run_id) cursor: the partial index
-- runs_awaiting_approval (migration 0014) holds exactly these. The literal predicate
-- is what lets the planner use it.
SELECT run_id, workflow, queue, status, input, created_at, updated_at, result, error, owner,
       fencing_token, available_at, cancel_requested, waiting_for, status_info,
       parent_run_id, finished_at, parent_position, on_parent_cancel, metrics
FROM {schema}.runs
WHERE status = 'waiting' AND waiting_for = 'signal approval'
  AND (created_at, run_id) > (%(after_at)s::float8, %(after_id)s::text)
ORDER BY created_at, run_id
LIMIT %(limit)s;

-- signals_pending_many --
-- The pending signals of a name of several runs, oldest first per run, through the
-- signals_pending index.
SELECT run_id, payload FROM {schema}.signals
WHERE run_id = ANY(%(run_ids)s::text[]) AND name = %(name)s AND consumed_position IS NULL
ORDER BY run_id, signal_id;

-- run_count_awaiting_approval --
-- How many of run_list_awaiting_approval's runs a person may answer at now (not
-- claimable: available_at unset or later; or claimable with no approval signal waiting
-- for it: its watch timed out, unanswered), the oldest `limit` at most, and how many of
-- them are at or before a (created_at, run_id) cursor: the approvals inbox's count and
-- its page's place. The same partial index, read in its order and cut at `limit`.
SELECT count(*),
       count(*) FILTER (WHERE (created_at, run_id) <= (%(upto_at)s::float8, %(upto_id)s::text))
FROM (SELECT created_at, run_id
      FROM {schema}.runs
      WHERE status = 'waiting' AND waiting_for = 'signal approval'
        AND (available_at IS NULL OR available_at > %(now)s::float8
             OR NOT EXISTS (SELECT 1 FROM {schema}.signals AS s
                            WHERE s.run_id = runs.run_id AND s.name = 'approval'
                              AND s.consumed_position IS NULL))
      ORDER BY created_at, run_id
      LIMIT %(limit)s) AS answerable;
