-- What purges took out of the cumulative figures of `tether serve`'s /metrics (LLM
-- tokens, cost and calls, the step duration histogram), by name: those figures are sums
-- over the runs the store keeps plus these, so that a counter never goes down when old
-- runs are purged (Prometheus reads a drop as a counter reset: rate() spikes).
CREATE TABLE {schema}.metric_totals (
    name  text PRIMARY KEY,
    value double precision NOT NULL
);
