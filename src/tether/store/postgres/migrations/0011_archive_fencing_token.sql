-- An archived generation's entries keep their fencing token (SQLite's 0012 did the same):
-- a fork's entries copied from its source have token 0, and /metrics' step histogram,
-- which counts them with the source only, must know them after the fork continues as
-- new too. Rows archived before have none (NULL): they count, as they did.
ALTER TABLE {schema}.journal_archive ADD COLUMN fencing_token bigint;
