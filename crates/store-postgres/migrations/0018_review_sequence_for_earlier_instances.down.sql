-- Back to 0017: a review record without `seq` is refused again.
DROP TRIGGER submission_reviews_next_seq ON submission_reviews;
DROP FUNCTION submission_reviews_next_seq();
