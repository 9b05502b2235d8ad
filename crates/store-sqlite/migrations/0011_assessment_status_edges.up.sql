-- The lifecycle's edges (draft → published → closed → archived) in the schema too: the store
-- checks them in the domain under the write lock, and this refuses what a code path forgets.
CREATE TRIGGER assessments_status_edges BEFORE UPDATE OF status ON assessments
WHEN OLD.status <> NEW.status AND NOT (
    (OLD.status = 'draft' AND NEW.status = 'published')
    OR (OLD.status = 'published' AND NEW.status = 'closed')
    OR (OLD.status = 'closed' AND NEW.status = 'archived'))
BEGIN
    SELECT RAISE(ABORT, 'invalid_transition');
END;
