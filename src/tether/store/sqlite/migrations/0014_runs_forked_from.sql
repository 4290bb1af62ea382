-- tether: compatible
-- (Earlier versions run beside this migration: they neither read nor write the index. It
-- is recorded in tether_schema_compatible, so they keep opening the store during a
-- rolling update; see COMPATIBLE_MARK in _store.py.)
-- A run's forks, by their source: `tether erase` erases a run's forks with it (their
-- journals start with rows copied from it) and looks them up level by level, as its
-- children are looked up by tether_runs_parent. Without it each level read the whole
-- runs table. Partial: only forks have a source, so other runs' rows add no entry.
CREATE INDEX tether_runs_forked_from ON tether_runs (forked_from)
    WHERE forked_from IS NOT NULL;
