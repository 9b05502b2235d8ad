-- A question may move neither out of nor into a frozen (not draft) version: the update guard
-- looked only at the question's old parent, so `SET assessment_id = <published>` moved a
-- question into a published version. And a frozen version's settings refuse only an actual
-- change, as on PostgreSQL (writing a value unchanged was refused here, accepted there).

DROP TRIGGER assessment_questions_frozen_update;

CREATE TRIGGER assessment_questions_frozen_update BEFORE UPDATE ON assessment_questions
WHEN (SELECT status FROM assessments WHERE id = OLD.assessment_id) <> 'draft'
  OR (SELECT status FROM assessments WHERE id = NEW.assessment_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

DROP TRIGGER assessments_frozen;

CREATE TRIGGER assessments_frozen BEFORE UPDATE OF title, description, time_limit_minutes,
    passing_score_percent, shuffle_questions, show_score_to_candidate ON assessments
WHEN OLD.status <> 'draft' AND (
    NEW.title IS NOT OLD.title
    OR NEW.description IS NOT OLD.description
    OR NEW.time_limit_minutes IS NOT OLD.time_limit_minutes
    OR NEW.passing_score_percent IS NOT OLD.passing_score_percent
    OR NEW.shuffle_questions IS NOT OLD.shuffle_questions
    OR NEW.show_score_to_candidate IS NOT OLD.show_score_to_candidate)
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;
