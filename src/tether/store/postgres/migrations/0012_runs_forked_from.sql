-- A run's forks, by their source: `tether erase` erases a run's forks with it (their
-- journals start with rows copied from it) and looks them up level by level, as its
-- children are looked up by runs_parent. Without it each level read the whole runs
-- table. Partial: only forks have a source, so other runs' rows and row versions add no
-- entry (forked_from is never updated, so it keeps updates HOT as they were).
CREATE INDEX runs_forked_from ON {schema}.runs (forked_from) WHERE forked_from IS NOT NULL;
