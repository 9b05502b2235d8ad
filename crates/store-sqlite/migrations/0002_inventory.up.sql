-- Inventory items, their immutable history, the transactional outbox and idempotency keys.

CREATE TABLE items (
    id         BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id     BLOB NOT NULL REFERENCES organizations (id),
    name       TEXT NOT NULL CONSTRAINT items_name_valid
               CHECK (length(name) BETWEEN 1 AND 200 AND name = trim(name)),
    -- Case-folded name, computed by the domain (identical on both backends).
    name_key   TEXT NOT NULL CHECK (length(name_key) >= 1),
    sku        TEXT CONSTRAINT items_sku_valid
               CHECK (sku IS NULL OR (length(sku) BETWEEN 1 AND 100 AND sku = trim(sku))),
    qty        INTEGER NOT NULL CONSTRAINT items_qty_range
               CHECK (qty >= 0 AND qty <= 9007199254740991),
    version    INTEGER NOT NULL CHECK (version >= 1),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    created_by BLOB NOT NULL,
    CONSTRAINT items_org_name_key UNIQUE (org_id, name_key)
) STRICT;

CREATE INDEX items_by_qty ON items (org_id, qty, id);
CREATE INDEX items_by_created ON items (org_id, created_at, id);

-- One row per change of an item; (item_id, version) is unique, so no change can be recorded
-- twice or lost between two others. Kept after the item is deleted.
CREATE TABLE item_history (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id        BLOB NOT NULL REFERENCES organizations (id),
    item_id       BLOB NOT NULL CHECK (length(item_id) = 16),
    version       INTEGER NOT NULL CHECK (version >= 1),
    kind          TEXT NOT NULL
                  CHECK (kind IN ('created', 'renamed', 'updated', 'qty_changed', 'deleted')),
    delta         INTEGER NOT NULL,
    qty_after     INTEGER NOT NULL CHECK (qty_after >= 0 AND qty_after <= 9007199254740991),
    name          TEXT NOT NULL,
    sku           TEXT,
    reason        TEXT,
    actor_user_id BLOB NOT NULL,
    request_id    TEXT NOT NULL,
    at            INTEGER NOT NULL,
    CONSTRAINT item_history_version_key UNIQUE (item_id, version),
    CHECK (kind <> 'qty_changed' OR delta <> 0),
    CHECK (kind <> 'created' OR (version = 1 AND delta = qty_after)),
    CHECK (kind <> 'deleted' OR qty_after = 0)
) STRICT;

CREATE INDEX item_history_by_item ON item_history (org_id, item_id, version);

CREATE TRIGGER item_history_no_update BEFORE UPDATE ON item_history
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER item_history_no_delete BEFORE DELETE ON item_history
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

-- Domain events, written in the transaction of their change; a relay publishes them.
-- On SQLite the single writer makes seq the commit order.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB NOT NULL CHECK (length(event_id) = 16),
    org_id       BLOB NOT NULL CHECK (length(org_id) = 16),
    event_type   TEXT NOT NULL,
    stream       TEXT NOT NULL,
    payload      TEXT NOT NULL CHECK (json_valid(payload)),
    created_at   INTEGER NOT NULL,
    published_at INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    CONSTRAINT outbox_event_id_key UNIQUE (event_id)
) STRICT;

CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

-- Idempotency keys: claimed (pending) before a mutation, completed with the response in the
-- mutation's own transaction.
CREATE TABLE idempotency_keys (
    org_id           BLOB NOT NULL,
    user_id          BLOB NOT NULL,
    key              TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint      BLOB NOT NULL CHECK (length(fingerprint) = 32),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'completed')),
    locked_until     INTEGER NOT NULL,
    response_status  INTEGER,
    response_headers TEXT CHECK (response_headers IS NULL OR json_valid(response_headers)),
    response_body    BLOB,
    created_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    PRIMARY KEY (org_id, user_id, key),
    CHECK ((state = 'completed') = (response_status IS NOT NULL AND response_body IS NOT NULL
                                    AND completed_at IS NOT NULL))
) STRICT;

CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
