-- A question may move neither out of nor into a frozen (not draft) version: the guard looked
-- only at the new parent of an update, so `SET assessment_id = <draft>` moved a question out
-- of a published version.
CREATE OR REPLACE FUNCTION assessment_questions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP <> 'INSERT' AND (SELECT status FROM assessments WHERE id = OLD.assessment_id) <> 'draft')
       OR (TG_OP <> 'DELETE' AND (SELECT status FROM assessments WHERE id = NEW.assessment_id) <> 'draft') THEN
        RAISE EXCEPTION 'assessment_frozen' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_frozen';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
