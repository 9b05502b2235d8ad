-- Back to 0005's table: the trail is ordered by (at, id) again.
CREATE INDEX submission_reviews_by_submission ON submission_reviews (submission_id, at);

ALTER TABLE submission_reviews
    DROP CONSTRAINT submission_reviews_seq_key,
    DROP CONSTRAINT submission_reviews_seq_check,
    DROP COLUMN seq;
