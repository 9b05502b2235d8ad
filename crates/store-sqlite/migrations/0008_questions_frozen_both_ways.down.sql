DROP TRIGGER assessment_questions_frozen_update;

CREATE TRIGGER assessment_questions_frozen_update BEFORE UPDATE ON assessment_questions
WHEN (SELECT status FROM assessments WHERE id = OLD.assessment_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

DROP TRIGGER assessments_frozen;

CREATE TRIGGER assessments_frozen BEFORE UPDATE OF title, description, time_limit_minutes,
    passing_score_percent, shuffle_questions, show_score_to_candidate ON assessments
WHEN OLD.status <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;
