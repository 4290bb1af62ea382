-- runs_claim and runs_status without the runs that are running. A run's row gets a new
-- version when it is claimed, when its lease is renewed and when it is released or ends;
-- none of these updates is HOT (each changes an indexed column), so every version has an
-- entry in every index whose predicate it meets, and the entries of dead versions stay
-- until VACUUM. Running versions are the short-lived ones (a claim, each renewed lease),
-- and the running runs are few and already indexed by runs_held (queue, available_at)
-- WHERE status = 'running' (migration 0002): the claim finds expired leases there, and
-- listing running runs sorts the few it finds there. A claim or a renewed lease now
-- writes two index entries fewer. Measured per waiting run (bench/waiting.py timers
-- --runs 10000 --park-only, autovacuum off): runs_claim 207 -> 122 bytes, runs_status
-- 97 -> 64. A status given as a parameter (run_list_status, run_search) still finds
-- runs_status: PostgreSQL plans with the value (a custom plan) unless a generic plan,
-- which cannot use a partial index, costs no more.

DROP INDEX {schema}.runs_claim;
CREATE INDEX runs_claim ON {schema}.runs (queue, available_at)
    WHERE available_at IS NOT NULL AND status <> 'running';
DROP INDEX {schema}.runs_status;
CREATE INDEX runs_status ON {schema}.runs (status, created_at) WHERE status <> 'running';
