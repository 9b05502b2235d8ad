-- Delivery: the outbox relay's per-destination progress and leases, webhooks, and their
-- delivery jobs with attempts.

-- NATS progress (the event log's is outbox.published_at).
ALTER TABLE outbox ADD COLUMN nats_published_at INTEGER;

CREATE INDEX outbox_nats_pending ON outbox (seq)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;

-- A relay instance holds one organization's lease per destination while it publishes that
-- organization's rows, so several instances never interleave one organization's events.
CREATE TABLE outbox_leases (
    destination TEXT NOT NULL CHECK (destination IN ('eventlog', 'nats')),
    org_id      BLOB NOT NULL,
    holder      TEXT NOT NULL,
    until       INTEGER NOT NULL,
    PRIMARY KEY (destination, org_id)
) STRICT;

CREATE TABLE webhooks (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id      BLOB NOT NULL REFERENCES organizations (id),
    url         TEXT NOT NULL CHECK (length(url) BETWEEN 8 AND 2000
                                     AND (url LIKE 'http://%' OR url LIKE 'https://%')),
    -- JSON array of event types; an entry ending in `*` is a prefix. Empty: every event.
    event_types TEXT NOT NULL CHECK (json_valid(event_types) AND json_type(event_types) = 'array'),
    secret      TEXT NOT NULL CHECK (length(secret) >= 32),
    created_at  INTEGER NOT NULL,
    created_by  BLOB NOT NULL
) STRICT;

CREATE INDEX webhooks_by_org ON webhooks (org_id, id);

CREATE TABLE webhook_deliveries (
    id              BLOB PRIMARY KEY CHECK (length(id) = 16),
    webhook_id      BLOB NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    org_id          BLOB NOT NULL,
    event_id        BLOB NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    locked_until    INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE webhook_attempts (
    delivery_id BLOB NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) STRICT;
