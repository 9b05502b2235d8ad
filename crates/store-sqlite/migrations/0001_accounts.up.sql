-- Accounts and tenancy. Ids are 16-byte UUID blobs; instants are INTEGER unix microseconds
-- (sortable, and identical to what PostgreSQL's timestamptz keeps).

CREATE TABLE users (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    email         TEXT NOT NULL
                  CONSTRAINT users_email_valid
                  CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)
                         AND instr(email, '@') > 1),
    password_hash TEXT NOT NULL CONSTRAINT users_password_hash_argon2id
                  CHECK (substr(password_hash, 1, 10) = '$argon2id$'),
    created_at    INTEGER NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
) STRICT;

CREATE TABLE organizations (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    name        TEXT NOT NULL CONSTRAINT organizations_name_valid
                CHECK (length(name) BETWEEN 1 AND 200 AND name = trim(name)),
    -- Maintained by the membership triggers below; the last-owner rule is enforced there.
    owner_count INTEGER NOT NULL DEFAULT 0 CHECK (owner_count >= 0),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    org_id     BLOB NOT NULL REFERENCES organizations (id),
    user_id    BLOB NOT NULL REFERENCES users (id),
    role       TEXT NOT NULL CONSTRAINT memberships_role_valid
               CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
) STRICT;

CREATE INDEX memberships_by_user ON memberships (user_id, org_id);

-- An organization always keeps at least one owner: every change of an owner membership moves
-- organizations.owner_count under the writer lock, and reaching zero aborts the transaction.
CREATE TRIGGER memberships_owner_inserted AFTER INSERT ON memberships
WHEN NEW.role = 'owner'
BEGIN
    UPDATE organizations SET owner_count = owner_count + 1 WHERE id = NEW.org_id;
END;

CREATE TRIGGER memberships_owner_updated AFTER UPDATE OF role ON memberships
WHEN OLD.role <> NEW.role AND (OLD.role = 'owner' OR NEW.role = 'owner')
BEGIN
    UPDATE organizations
    SET owner_count = owner_count + (CASE WHEN NEW.role = 'owner' THEN 1 ELSE -1 END)
    WHERE id = NEW.org_id;
    SELECT RAISE(ABORT, 'last_owner')
    WHERE (SELECT owner_count FROM organizations WHERE id = NEW.org_id) < 1;
END;

CREATE TRIGGER memberships_owner_deleted AFTER DELETE ON memberships
WHEN OLD.role = 'owner'
BEGIN
    UPDATE organizations SET owner_count = owner_count - 1 WHERE id = OLD.org_id;
    SELECT RAISE(ABORT, 'last_owner')
    WHERE (SELECT owner_count FROM organizations WHERE id = OLD.org_id) < 1;
END;

CREATE TABLE api_tokens (
    id         BLOB PRIMARY KEY CHECK (length(id) = 16),
    -- SHA-256 of the secret; the secret itself is never stored.
    token_hash BLOB NOT NULL CHECK (length(token_hash) = 32),
    user_id    BLOB NOT NULL,
    org_id     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash),
    CHECK (expires_at > created_at),
    -- Leaving an organization invalidates the tokens scoped to it.
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE
) STRICT;

CREATE INDEX api_tokens_by_membership ON api_tokens (org_id, user_id);

-- Who did what to accounts and memberships. Rows are immutable (see the triggers).
CREATE TABLE audit_log (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id        BLOB NOT NULL REFERENCES organizations (id),
    actor_user_id BLOB NOT NULL,
    request_id    TEXT NOT NULL,
    action        TEXT NOT NULL,
    subject_id    BLOB,
    detail        TEXT NOT NULL CHECK (json_valid(detail)),
    at            INTEGER NOT NULL
) STRICT;

CREATE INDEX audit_log_by_org ON audit_log (org_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;
