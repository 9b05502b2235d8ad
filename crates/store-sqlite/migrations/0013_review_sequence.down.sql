-- Back to 0004's table: the trail is ordered by (at, id) again. The table is rebuilt as on
-- the way up, and created, indexed and guarded with 0004's statements word for word, so the
-- schema is the one 0004 made.
ALTER TABLE submission_reviews RENAME TO submission_reviews_with_seq;

CREATE TABLE submission_reviews (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    submission_id BLOB NOT NULL REFERENCES submissions (id),
    from_status   TEXT NOT NULL,
    to_status     TEXT NOT NULL,
    decision      TEXT NOT NULL,
    note          TEXT CHECK (note IS NULL OR length(note) <= 2000),
    actor_user_id BLOB NOT NULL,
    request_id    TEXT NOT NULL,
    at            INTEGER NOT NULL
) STRICT;

INSERT INTO submission_reviews (id, submission_id, from_status, to_status, decision, note,
                                actor_user_id, request_id, at)
SELECT id, submission_id, from_status, to_status, decision, note, actor_user_id, request_id, at
FROM submission_reviews_with_seq;

DROP TABLE submission_reviews_with_seq;

CREATE INDEX submission_reviews_by_submission ON submission_reviews (submission_id, at);

CREATE TRIGGER submission_reviews_no_update BEFORE UPDATE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER submission_reviews_no_delete BEFORE DELETE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;
