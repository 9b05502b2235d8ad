DROP TRIGGER assessments_status_edges ON assessments;
DROP FUNCTION assessments_status_edges();
