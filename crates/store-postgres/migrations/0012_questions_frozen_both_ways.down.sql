CREATE OR REPLACE FUNCTION assessment_questions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.assessment_id ELSE NEW.assessment_id END;
BEGIN
    IF (SELECT status FROM assessments WHERE id = parent) <> 'draft' THEN
        RAISE EXCEPTION 'assessment_frozen' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_frozen';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
