-- The lifecycle's edges (draft → published → closed → archived) in the schema too: the store
-- checks them in the domain under the row lock, and this refuses what a code path forgets.
CREATE FUNCTION assessments_status_edges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = 'draft' AND NEW.status = 'published')
            OR (OLD.status = 'published' AND NEW.status = 'closed')
            OR (OLD.status = 'closed' AND NEW.status = 'archived')) THEN
        RAISE EXCEPTION 'invalid_transition' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_status_edges';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER assessments_status_edges BEFORE UPDATE OF status ON assessments
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION assessments_status_edges();
