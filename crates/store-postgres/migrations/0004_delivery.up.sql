-- Delivery: the outbox relay's per-destination progress and leases, webhooks, and their
-- delivery jobs with attempts.

ALTER TABLE outbox ADD COLUMN nats_published_at timestamptz;
-- The writing transaction's id: the relay only publishes rows of transactions older than
-- every transaction still running, so a row that commits late is never overtaken by a later
-- sequence number that was already published.
ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX outbox_nats_pending ON outbox (seq)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;

CREATE TABLE outbox_leases (
    destination text NOT NULL CHECK (destination IN ('eventlog', 'nats')),
    org_id      uuid NOT NULL,
    holder      text NOT NULL,
    until       timestamptz NOT NULL,
    PRIMARY KEY (destination, org_id)
);

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    url         text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000
                                     AND (url LIKE 'http://%' OR url LIKE 'https://%')),
    event_types jsonb NOT NULL CHECK (jsonb_typeof(event_types) = 'array'),
    secret      text NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL,
    created_by  uuid NOT NULL
);

CREATE INDEX webhooks_by_org ON webhooks (org_id, id);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    org_id          uuid NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'succeeded', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    locked_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    at          timestamptz NOT NULL,
    status      integer,
    error       text,
    duration_ms bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
