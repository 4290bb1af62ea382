-- The op events of finished journal entries written by the appends' statements
-- themselves (journal_append, journal_append_one in queries.sql), not by the row trigger.
-- The PL/pgSQL trigger cost ~28 us of a lone append's ~78 us of server execution and
-- ~4 us per entry of a batch; a data-modifying CTE in the statement writes the same rows
-- (kind 'o', the data of migration 0007) for a fraction of that.
--
-- Such a statement first sets tether.op_events to 'statement' for its transaction
-- (set_config(..., true), evaluated once before any row is written: an InitPlan that
-- gates the statement), and the trigger skips the final entries written while it is
-- set. A transaction-local setting lives exactly as long as the statement's transaction,
-- which a transaction-mode pooler keeps on one server connection, so no other
-- transaction can see it. The appends' transactions write nothing else to the journal.
-- Every other writer of the journal (a fork copying entries, a retry resetting them, an
-- operator's SQL) still has its events written by the trigger, and so does a pending
-- entry carrying an error (a retry's back-off), whose event depends on the row it
-- replaced, which only the trigger sees.

DROP TRIGGER run_events_journal ON {schema}.journal;
CREATE TRIGGER run_events_journal AFTER INSERT OR UPDATE ON {schema}.journal
FOR EACH ROW WHEN ((NEW.status <> 'pending' OR NEW.error IS NOT NULL)
                   AND (NEW.status = 'pending'
                        OR current_setting('tether.op_events', true)
                           IS DISTINCT FROM 'statement'))
EXECUTE FUNCTION {schema}.run_events_journal();
