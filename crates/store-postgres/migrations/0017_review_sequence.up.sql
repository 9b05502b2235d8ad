-- A submission's review trail is ordered by a per-submission sequence, not by `at` (the clock
-- of the instance that made the transition: instances' clocks differ and may step back): the
-- store writes 1 + the submission's highest `seq` in the transition's own transaction, after
-- its guarded status update under the submission's row lock. Rows written before are numbered
-- in the best order known for them, (at, id). UNIQUE (submission_id, seq) refuses two
-- transitions recorded as one step, and its index serves the trail's reads instead of
-- submission_reviews_by_submission (submission_id, at).
--
-- The numbering is an UPDATE of an immutable table: its trigger is disabled for that statement
-- only. The migration is one transaction and ALTER TABLE holds the table's exclusive lock to
-- its end, so no other session ever sees the trigger off.
ALTER TABLE submission_reviews ADD COLUMN seq integer;

ALTER TABLE submission_reviews DISABLE TRIGGER submission_reviews_immutable;

UPDATE submission_reviews r
SET seq = numbered.seq
FROM (SELECT id, row_number() OVER (PARTITION BY submission_id ORDER BY at, id) AS seq
      FROM submission_reviews) numbered
WHERE numbered.id = r.id;

ALTER TABLE submission_reviews ENABLE TRIGGER submission_reviews_immutable;

ALTER TABLE submission_reviews
    ALTER COLUMN seq SET NOT NULL,
    ADD CONSTRAINT submission_reviews_seq_check CHECK (seq >= 1),
    ADD CONSTRAINT submission_reviews_seq_key UNIQUE (submission_id, seq);

DROP INDEX submission_reviews_by_submission;
