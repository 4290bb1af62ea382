-- Which worker held a run's lease when it journaled a step that succeeded at its first
-- attempt. Such an attempt gets no row in tether_attempts when it succeeded before any
-- state of it was written: its journal entry holds the attempt (number 1, start, end,
-- outcome) but for the worker, which this table gives by the entry's fencing token.
-- attempt_list (lifecycle.sql) reads such an attempt from the two. One row per lease
-- that journaled such a step, written with the first of them (the run's owner: the
-- append is fenced), against a history row per step saved; none for a run that never
-- ran a step, so a run parked on a signal or a timer costs nothing more.
CREATE TABLE tether_leases (
    run_id        TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    PRIMARY KEY (run_id, fencing_token)
) WITHOUT ROWID;

CREATE TRIGGER tether_leases_record AFTER INSERT ON tether_journal
WHEN NEW.kind = 'step' AND NEW.status = 'ok' AND NEW.attempts = 1 AND NEW.fencing_token > 0
BEGIN
    INSERT OR IGNORE INTO tether_leases (run_id, fencing_token, worker_id)
    SELECT NEW.run_id, NEW.fencing_token, owner FROM tether_runs
    WHERE run_id = NEW.run_id AND owner IS NOT NULL;
END;

CREATE TRIGGER tether_leases_forget AFTER DELETE ON tether_runs
BEGIN
    DELETE FROM tether_leases WHERE run_id = OLD.run_id;
END;

-- An archived generation's entries keep their fencing token, for the same reading.
ALTER TABLE tether_journal_archive ADD COLUMN fencing_token INTEGER;
