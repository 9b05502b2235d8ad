-- Assessments: each row is one version. A draft is editable; publishing freezes it (the
-- triggers below refuse any change to a frozen version's settings or questions), so what a
-- candidate took never changes. A revision is a new draft row of the same family.

ALTER TABLE organizations ADD COLUMN published_assessments integer NOT NULL DEFAULT 0
    CHECK (published_assessments >= 0);

CREATE TABLE assessments (
    id                      uuid PRIMARY KEY,
    org_id                  uuid NOT NULL REFERENCES organizations (id),
    family_id               uuid NOT NULL,
    version_number          integer NOT NULL CHECK (version_number >= 1),
    status                  text NOT NULL
                            CHECK (status IN ('draft', 'published', 'closed', 'archived')),
    title                   text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description             text CHECK (description IS NULL OR length(description) <= 5000),
    time_limit_minutes      integer NOT NULL CHECK (time_limit_minutes BETWEEN 5 AND 240),
    passing_score_percent   integer NOT NULL CHECK (passing_score_percent BETWEEN 0 AND 100),
    shuffle_questions       boolean NOT NULL,
    show_score_to_candidate boolean NOT NULL,
    revision                bigint NOT NULL CHECK (revision >= 1),
    share_token_hash        bytea CHECK (share_token_hash IS NULL OR length(share_token_hash) = 32),
    published_at            timestamptz,
    closed_at               timestamptz,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    created_by              uuid NOT NULL,
    CONSTRAINT assessments_family_version_key UNIQUE (family_id, version_number),
    CONSTRAINT assessments_share_token_key UNIQUE (share_token_hash),
    CHECK ((status = 'draft') = (published_at IS NULL))
);

CREATE INDEX assessments_by_org ON assessments (org_id, id);

CREATE FUNCTION assessments_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'assessment_frozen' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_frozen';
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.title IS DISTINCT FROM OLD.title
        OR NEW.description IS DISTINCT FROM OLD.description
        OR NEW.time_limit_minutes IS DISTINCT FROM OLD.time_limit_minutes
        OR NEW.passing_score_percent IS DISTINCT FROM OLD.passing_score_percent
        OR NEW.shuffle_questions IS DISTINCT FROM OLD.shuffle_questions
        OR NEW.show_score_to_candidate IS DISTINCT FROM OLD.show_score_to_candidate) THEN
        RAISE EXCEPTION 'assessment_frozen' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_frozen';
    END IF;
    IF (OLD.status = 'published') <> (NEW.status = 'published') THEN
        UPDATE organizations
        SET published_assessments = published_assessments
            + (CASE WHEN NEW.status = 'published' THEN 1 ELSE -1 END)
        WHERE id = NEW.org_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER assessments_guard BEFORE UPDATE OR DELETE ON assessments
FOR EACH ROW EXECUTE FUNCTION assessments_guard();

CREATE TABLE assessment_questions (
    id            uuid PRIMARY KEY,
    assessment_id uuid NOT NULL REFERENCES assessments (id),
    position      integer NOT NULL CHECK (position >= 0),
    kind          text NOT NULL CHECK (kind IN ('single_choice', 'multiple_choice', 'true_false',
                                                'short_text', 'numeric')),
    points        integer NOT NULL CHECK (points BETWEEN 1 AND 100),
    spec          text NOT NULL CHECK (spec::jsonb IS NOT NULL),
    CONSTRAINT assessment_questions_position_key UNIQUE (assessment_id, position)
);

CREATE FUNCTION assessment_questions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.assessment_id ELSE NEW.assessment_id END;
BEGIN
    IF (SELECT status FROM assessments WHERE id = parent) <> 'draft' THEN
        RAISE EXCEPTION 'assessment_frozen' USING ERRCODE = 'check_violation',
            CONSTRAINT = 'assessments_frozen';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE TRIGGER assessment_questions_guard BEFORE INSERT OR UPDATE OR DELETE ON assessment_questions
FOR EACH ROW EXECUTE FUNCTION assessment_questions_guard();

CREATE TABLE invites (
    id             uuid PRIMARY KEY,
    assessment_id  uuid NOT NULL REFERENCES assessments (id),
    org_id         uuid NOT NULL,
    email          text NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    name           text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200),
    token_hash     bytea NOT NULL CHECK (length(token_hash) = 32),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    via_share_link boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    CONSTRAINT invites_token_key UNIQUE (token_hash),
    CONSTRAINT invites_assessment_email_key UNIQUE (assessment_id, email),
    CHECK (expires_at > created_at)
);

CREATE INDEX invites_by_assessment ON invites (assessment_id, id);

CREATE TABLE attempts (
    id             uuid PRIMARY KEY,
    invite_id      uuid NOT NULL REFERENCES invites (id),
    assessment_id  uuid NOT NULL REFERENCES assessments (id),
    started_at     timestamptz NOT NULL,
    deadline_at    timestamptz NOT NULL,
    question_order text NOT NULL CHECK (question_order::jsonb IS NOT NULL),
    answers        text NOT NULL DEFAULT '{}' CHECK (answers::jsonb IS NOT NULL),
    saved_at       timestamptz,
    submitted_at   timestamptz,
    CONSTRAINT attempts_invite_key UNIQUE (invite_id),
    CHECK (deadline_at > started_at)
);

CREATE INDEX attempts_open_by_deadline ON attempts (deadline_at) WHERE submitted_at IS NULL;

CREATE TABLE submissions (
    id             uuid PRIMARY KEY,
    attempt_id     uuid NOT NULL REFERENCES attempts (id),
    invite_id      uuid NOT NULL REFERENCES invites (id),
    assessment_id  uuid NOT NULL REFERENCES assessments (id),
    org_id         uuid NOT NULL,
    email          text NOT NULL,
    earned         bigint NOT NULL CHECK (earned >= 0),
    total          bigint NOT NULL CHECK (total >= 1),
    passed         boolean NOT NULL,
    per_question   text NOT NULL CHECK (per_question::jsonb IS NOT NULL),
    answers        text NOT NULL CHECK (answers::jsonb IS NOT NULL),
    auto_submitted boolean NOT NULL,
    review_status  text NOT NULL
                   CHECK (review_status IN ('submitted', 'verified', 'approved', 'rejected', 'archived')),
    submitted_at   timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT submissions_attempt_key UNIQUE (attempt_id),
    CONSTRAINT submissions_candidate_key UNIQUE (assessment_id, email),
    CHECK (earned <= total)
);

CREATE INDEX submissions_by_assessment ON submissions (assessment_id, id);

CREATE TABLE submission_reviews (
    id            uuid PRIMARY KEY,
    submission_id uuid NOT NULL REFERENCES submissions (id),
    from_status   text NOT NULL,
    to_status     text NOT NULL,
    decision      text NOT NULL,
    note          text CHECK (note IS NULL OR length(note) <= 2000),
    actor_user_id uuid NOT NULL,
    request_id    text NOT NULL,
    at            timestamptz NOT NULL
);

CREATE INDEX submission_reviews_by_submission ON submission_reviews (submission_id, at);

CREATE TRIGGER submission_reviews_immutable BEFORE UPDATE OR DELETE ON submission_reviews
FOR EACH ROW EXECUTE FUNCTION refuse_change();
