-- A submission's review trail is ordered by a per-submission sequence, not by `at` (the clock
-- of the instance that made the transition, which may step back): the store writes 1 + the
-- submission's highest `seq` in the transition's own write transaction, after its guarded
-- status update. Rows written before are numbered in the best order known for them, (at, id).
-- UNIQUE (submission_id, seq) refuses two transitions recorded as one step, and its index
-- serves the trail's reads instead of submission_reviews_by_submission (submission_id, at).
--
-- SQLite adds no NOT NULL column without a default to rows that exist, so the table is
-- rebuilt. The old table is renamed aside first (so the new one is created under its own
-- name, as 0004 created the old): no other table, trigger or view refers to
-- submission_reviews, and its triggers go with it. Foreign keys stay on (a migration runs in
-- a transaction, where PRAGMA foreign_keys cannot change): dropping a table nothing
-- refers to checks nothing, and its implicit delete fires no trigger (so the immutability
-- triggers do not refuse it); the copied rows still refer to their submissions.
ALTER TABLE submission_reviews RENAME TO submission_reviews_before_seq;

DROP INDEX submission_reviews_by_submission;

CREATE TABLE submission_reviews (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    submission_id BLOB NOT NULL REFERENCES submissions (id),
    seq           INTEGER NOT NULL CHECK (seq >= 1),
    from_status   TEXT NOT NULL,
    to_status     TEXT NOT NULL,
    decision      TEXT NOT NULL,
    note          TEXT CHECK (note IS NULL OR length(note) <= 2000),
    actor_user_id BLOB NOT NULL,
    request_id    TEXT NOT NULL,
    at            INTEGER NOT NULL,
    CONSTRAINT submission_reviews_seq_key UNIQUE (submission_id, seq)
) STRICT;

INSERT INTO submission_reviews (id, submission_id, seq, from_status, to_status, decision, note,
                                actor_user_id, request_id, at)
SELECT id, submission_id, row_number() OVER (PARTITION BY submission_id ORDER BY at, id),
       from_status, to_status, decision, note, actor_user_id, request_id, at
FROM submission_reviews_before_seq;

DROP TABLE submission_reviews_before_seq;

CREATE TRIGGER submission_reviews_no_update BEFORE UPDATE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER submission_reviews_no_delete BEFORE DELETE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;
