-- Assessments: each row is one version. A draft is editable; publishing freezes it (the
-- triggers below refuse any change to a frozen version's settings or questions), so what a
-- candidate took never changes. A revision is a new draft row of the same family.

ALTER TABLE organizations ADD COLUMN published_assessments INTEGER NOT NULL DEFAULT 0
    CHECK (published_assessments >= 0);

CREATE TABLE assessments (
    id                      BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id                  BLOB NOT NULL REFERENCES organizations (id),
    family_id               BLOB NOT NULL,
    version_number          INTEGER NOT NULL CHECK (version_number >= 1),
    status                  TEXT NOT NULL
                            CHECK (status IN ('draft', 'published', 'closed', 'archived')),
    title                   TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description             TEXT CHECK (description IS NULL OR length(description) <= 5000),
    time_limit_minutes      INTEGER NOT NULL CHECK (time_limit_minutes BETWEEN 5 AND 240),
    passing_score_percent   INTEGER NOT NULL CHECK (passing_score_percent BETWEEN 0 AND 100),
    shuffle_questions       INTEGER NOT NULL CHECK (shuffle_questions IN (0, 1)),
    show_score_to_candidate INTEGER NOT NULL CHECK (show_score_to_candidate IN (0, 1)),
    -- +1 on every change of the draft (the ETag).
    revision                INTEGER NOT NULL CHECK (revision >= 1),
    share_token_hash        BLOB CHECK (share_token_hash IS NULL OR length(share_token_hash) = 32),
    published_at            INTEGER,
    closed_at               INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    created_by              BLOB NOT NULL,
    CONSTRAINT assessments_family_version_key UNIQUE (family_id, version_number),
    CONSTRAINT assessments_share_token_key UNIQUE (share_token_hash),
    CHECK ((status = 'draft') = (published_at IS NULL))
) STRICT;

CREATE INDEX assessments_by_org ON assessments (org_id, id);

-- The published counter follows every status change, so the quota check (done under the
-- writer lock) always reads the truth.
CREATE TRIGGER assessments_published_count AFTER UPDATE OF status ON assessments
WHEN (OLD.status = 'published') <> (NEW.status = 'published')
BEGIN
    UPDATE organizations
    SET published_assessments = published_assessments
        + (CASE WHEN NEW.status = 'published' THEN 1 ELSE -1 END)
    WHERE id = NEW.org_id;
END;

-- Only a draft's settings may change; afterwards only the lifecycle columns move.
CREATE TRIGGER assessments_frozen BEFORE UPDATE OF title, description, time_limit_minutes,
    passing_score_percent, shuffle_questions, show_score_to_candidate ON assessments
WHEN OLD.status <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

CREATE TRIGGER assessments_no_delete BEFORE DELETE ON assessments
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

CREATE TABLE assessment_questions (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    assessment_id BLOB NOT NULL REFERENCES assessments (id),
    position      INTEGER NOT NULL CHECK (position >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('single_choice', 'multiple_choice', 'true_false',
                                                'short_text', 'numeric')),
    points        INTEGER NOT NULL CHECK (points BETWEEN 1 AND 100),
    -- The full validated question, answer key included (never sent to candidates).
    spec          TEXT NOT NULL CHECK (json_valid(spec)),
    CONSTRAINT assessment_questions_position_key UNIQUE (assessment_id, position)
) STRICT;

CREATE TRIGGER assessment_questions_frozen_insert BEFORE INSERT ON assessment_questions
WHEN (SELECT status FROM assessments WHERE id = NEW.assessment_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

CREATE TRIGGER assessment_questions_frozen_update BEFORE UPDATE ON assessment_questions
WHEN (SELECT status FROM assessments WHERE id = OLD.assessment_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

CREATE TRIGGER assessment_questions_frozen_delete BEFORE DELETE ON assessment_questions
WHEN (SELECT status FROM assessments WHERE id = OLD.assessment_id) <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'assessment_frozen');
END;

CREATE TABLE invites (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    assessment_id BLOB NOT NULL REFERENCES assessments (id),
    org_id        BLOB NOT NULL,
    email         TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    name          TEXT CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the candidate's token; the token itself is never stored.
    token_hash    BLOB NOT NULL CHECK (length(token_hash) = 32),
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    via_share_link INTEGER NOT NULL DEFAULT 0 CHECK (via_share_link IN (0, 1)),
    created_at    INTEGER NOT NULL,
    CONSTRAINT invites_token_key UNIQUE (token_hash),
    CONSTRAINT invites_assessment_email_key UNIQUE (assessment_id, email),
    CHECK (expires_at > created_at)
) STRICT;

CREATE INDEX invites_by_assessment ON invites (assessment_id, id);

CREATE TABLE attempts (
    id             BLOB PRIMARY KEY CHECK (length(id) = 16),
    invite_id      BLOB NOT NULL REFERENCES invites (id),
    assessment_id  BLOB NOT NULL REFERENCES assessments (id),
    started_at     INTEGER NOT NULL,
    deadline_at    INTEGER NOT NULL,
    -- The question ids in the order this candidate sees them.
    question_order TEXT NOT NULL CHECK (json_valid(question_order)),
    answers        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(answers)),
    saved_at       INTEGER,
    submitted_at   INTEGER,
    CONSTRAINT attempts_invite_key UNIQUE (invite_id),
    CHECK (deadline_at > started_at)
) STRICT;

CREATE INDEX attempts_open_by_deadline ON attempts (deadline_at) WHERE submitted_at IS NULL;

CREATE TABLE submissions (
    id             BLOB PRIMARY KEY CHECK (length(id) = 16),
    attempt_id     BLOB NOT NULL REFERENCES attempts (id),
    invite_id      BLOB NOT NULL REFERENCES invites (id),
    assessment_id  BLOB NOT NULL REFERENCES assessments (id),
    org_id         BLOB NOT NULL,
    email          TEXT NOT NULL,
    earned         INTEGER NOT NULL CHECK (earned >= 0),
    total          INTEGER NOT NULL CHECK (total >= 1),
    passed         INTEGER NOT NULL CHECK (passed IN (0, 1)),
    per_question   TEXT NOT NULL CHECK (json_valid(per_question)),
    answers        TEXT NOT NULL CHECK (json_valid(answers)),
    auto_submitted INTEGER NOT NULL CHECK (auto_submitted IN (0, 1)),
    review_status  TEXT NOT NULL
                   CHECK (review_status IN ('submitted', 'verified', 'approved', 'rejected', 'archived')),
    submitted_at   INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- One submission per candidate per assessment: two concurrent submits, one winner.
    CONSTRAINT submissions_attempt_key UNIQUE (attempt_id),
    CONSTRAINT submissions_candidate_key UNIQUE (assessment_id, email),
    CHECK (earned <= total)
) STRICT;

CREATE INDEX submissions_by_assessment ON submissions (assessment_id, id);

-- Every review transition, immutable.
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

CREATE INDEX submission_reviews_by_submission ON submission_reviews (submission_id, at);

CREATE TRIGGER submission_reviews_no_update BEFORE UPDATE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER submission_reviews_no_delete BEFORE DELETE ON submission_reviews
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;
