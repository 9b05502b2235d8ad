-- Accounts and tenancy. The same invariants as the SQLite schema, in PostgreSQL's terms.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL
                  CONSTRAINT users_email_valid
                  CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)
                         AND strpos(email, '@') > 1),
    password_hash text NOT NULL CONSTRAINT users_password_hash_argon2id
                  CHECK (substr(password_hash, 1, 10) = '$argon2id$'),
    created_at    timestamptz NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CONSTRAINT organizations_name_valid
                CHECK (length(name) BETWEEN 1 AND 200 AND name = btrim(name)),
    -- Maintained by memberships_owner_count(); the last-owner rule is enforced there.
    owner_count integer NOT NULL DEFAULT 0 CHECK (owner_count >= 0),
    created_at  timestamptz NOT NULL
);

CREATE TABLE memberships (
    org_id     uuid NOT NULL REFERENCES organizations (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    role       text NOT NULL CONSTRAINT memberships_role_valid
               CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT memberships_pkey PRIMARY KEY (org_id, user_id)
);

CREATE INDEX memberships_by_user ON memberships (user_id, org_id);

-- An organization always keeps at least one owner. Every change of an owner membership
-- updates organizations.owner_count, which row-locks the organization: two owners demoting
-- each other concurrently are serialized there, and the second sees the count reach zero.
CREATE FUNCTION memberships_owner_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
    org uuid;
    remaining integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        org := NEW.org_id;
        IF NEW.role = 'owner' THEN delta := 1; END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        org := NEW.org_id;
        IF OLD.role = 'owner' AND NEW.role <> 'owner' THEN delta := -1;
        ELSIF OLD.role <> 'owner' AND NEW.role = 'owner' THEN delta := 1;
        END IF;
    ELSE
        org := OLD.org_id;
        IF OLD.role = 'owner' THEN delta := -1; END IF;
    END IF;
    IF delta <> 0 THEN
        UPDATE organizations SET owner_count = owner_count + delta WHERE id = org
        RETURNING owner_count INTO remaining;
        IF remaining < 1 THEN
            RAISE EXCEPTION 'last_owner' USING ERRCODE = 'check_violation',
                CONSTRAINT = 'organizations_last_owner';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER memberships_owner_count
AFTER INSERT OR UPDATE OF role OR DELETE ON memberships
FOR EACH ROW EXECUTE FUNCTION memberships_owner_count();

CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    -- SHA-256 of the secret; the secret itself is never stored.
    token_hash bytea NOT NULL CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL,
    org_id     uuid NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash),
    CHECK (expires_at > created_at),
    -- Leaving an organization invalidates the tokens scoped to it.
    CONSTRAINT api_tokens_membership_fkey FOREIGN KEY (org_id, user_id)
        REFERENCES memberships (org_id, user_id) ON DELETE CASCADE
);

CREATE INDEX api_tokens_by_membership ON api_tokens (org_id, user_id);

-- Who did what to accounts and memberships. Rows are immutable (see the trigger).
CREATE TABLE audit_log (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    actor_user_id uuid NOT NULL,
    request_id    text NOT NULL,
    action        text NOT NULL,
    subject_id    uuid,
    detail        jsonb NOT NULL,
    at            timestamptz NOT NULL
);

CREATE INDEX audit_log_by_org ON audit_log (org_id, id);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_immutable' USING ERRCODE = 'check_violation',
        CONSTRAINT = TG_TABLE_NAME || '_immutable';
END
$$;

CREATE TRIGGER audit_log_immutable BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION refuse_change();
