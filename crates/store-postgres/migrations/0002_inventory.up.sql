-- Inventory items, their immutable history, the transactional outbox and idempotency keys.

CREATE TABLE items (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id),
    name       text NOT NULL CONSTRAINT items_name_valid
               CHECK (length(name) BETWEEN 1 AND 200 AND name = btrim(name)),
    -- Case-folded name, computed by the domain (identical on both backends).
    name_key   text NOT NULL CHECK (length(name_key) >= 1),
    sku        text CONSTRAINT items_sku_valid
               CHECK (sku IS NULL OR (length(sku) BETWEEN 1 AND 100 AND sku = btrim(sku))),
    qty        bigint NOT NULL CONSTRAINT items_qty_range
               CHECK (qty >= 0 AND qty <= 9007199254740991),
    version    bigint NOT NULL CHECK (version >= 1),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_by uuid NOT NULL,
    CONSTRAINT items_org_name_key UNIQUE (org_id, name_key)
);

CREATE INDEX items_by_qty ON items (org_id, qty, id);
CREATE INDEX items_by_created ON items (org_id, created_at, id);

-- One row per change of an item; (item_id, version) is unique, so no change can be recorded
-- twice or lost between two others. Kept after the item is deleted.
CREATE TABLE item_history (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    item_id       uuid NOT NULL,
    version       bigint NOT NULL CHECK (version >= 1),
    kind          text NOT NULL
                  CHECK (kind IN ('created', 'renamed', 'updated', 'qty_changed', 'deleted')),
    delta         bigint NOT NULL,
    qty_after     bigint NOT NULL CHECK (qty_after >= 0 AND qty_after <= 9007199254740991),
    name          text NOT NULL,
    sku           text,
    reason        text,
    actor_user_id uuid NOT NULL,
    request_id    text NOT NULL,
    at            timestamptz NOT NULL,
    CONSTRAINT item_history_version_key UNIQUE (item_id, version),
    CHECK (kind <> 'qty_changed' OR delta <> 0),
    CHECK (kind <> 'created' OR (version = 1 AND delta = qty_after)),
    CHECK (kind <> 'deleted' OR qty_after = 0)
);

CREATE INDEX item_history_by_item ON item_history (org_id, item_id, version);

CREATE TRIGGER item_history_immutable BEFORE UPDATE OR DELETE ON item_history
FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Domain events, written in the transaction of their change; a relay publishes them.
CREATE TABLE outbox (
    seq          bigserial PRIMARY KEY,
    event_id     uuid NOT NULL,
    org_id       uuid NOT NULL,
    event_type   text NOT NULL,
    stream       text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
);

CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

-- Idempotency keys: claimed (pending) before a mutation, completed with the response in the
-- mutation's own transaction.
CREATE TABLE idempotency_keys (
    org_id           uuid NOT NULL,
    user_id          uuid NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint      bytea NOT NULL CHECK (length(fingerprint) = 32),
    state            text NOT NULL CHECK (state IN ('pending', 'completed')),
    locked_until     timestamptz NOT NULL,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    PRIMARY KEY (org_id, user_id, key),
    CHECK ((state = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL
                                    AND completed_at IS NOT NULL))
);

CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
