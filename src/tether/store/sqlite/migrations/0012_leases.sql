-- Which worker held each lease of a run. A step whose first attempt succeeded before
-- any state of it was written gets no row in tether_attempts: its journal entry holds
-- the attempt (number 1, start, end, outcome) but for the worker, which this table
-- gives by the entry's fencing token. attempt_list (lifecycle.sql) reads such an attempt
-- from the two. One row per claim, written by the claim itself (this trigger), against a
-- history row per step saved: ten for a run of ten steps claimed once.
CREATE TABLE tether_leases (
    run_id        TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    PRIMARY KEY (run_id, fencing_token)
) WITHOUT ROWID;

CREATE TRIGGER tether_leases_claim AFTER UPDATE OF fencing_token ON tether_runs
WHEN NEW.owner IS NOT NULL AND NEW.fencing_token IS NOT OLD.fencing_token
BEGIN
    INSERT OR REPLACE INTO tether_leases (run_id, fencing_token, worker_id)
    VALUES (NEW.run_id, NEW.fencing_token, NEW.owner);
END;

CREATE TRIGGER tether_leases_forget AFTER DELETE ON tether_runs
BEGIN
    DELETE FROM tether_leases WHERE run_id = OLD.run_id;
END;

-- An archived generation's entries keep their fencing token, for the same reading.
ALTER TABLE tether_journal_archive ADD COLUMN fencing_token INTEGER;
