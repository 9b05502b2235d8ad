-- The kinds of a history record checked by comparisons instead of `kind IN (…)`. SQLite
-- evaluates an IN list of more than two constants through an ephemeral b-tree that it builds
-- for each execution of the statement: every audit record (one per quantity change) opened
-- an in-memory database, inserted the five kinds into it, looked its own up and closed it
-- (docs/benchmarks.md, 2026-12-05, late morning). Written as comparisons, the same rule is
-- evaluated in place. SQLite cannot change a CHECK in place, so the table is rebuilt
-- (https://sqlite.org/lang_altertable.html#otheralter): renamed aside, created anew, its rows
-- copied, the old one dropped (a DROP fires no trigger), its triggers made again; the
-- UNIQUE constraints bring their indexes. Nothing references item_history. The rebuild
-- copies every history record once, so it takes time in proportion to the history.
ALTER TABLE item_history RENAME TO item_history_old;
CREATE TABLE item_history (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    org_id        BLOB NOT NULL REFERENCES organizations (id),
    item_id       BLOB NOT NULL CHECK (length(item_id) = 16),
    version       INTEGER NOT NULL CHECK (version >= 1),
    kind          TEXT NOT NULL
                  CHECK (kind = 'created' OR kind = 'renamed' OR kind = 'updated'
                         OR kind = 'qty_changed' OR kind = 'deleted'),
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
-- Row ids kept as they were.
INSERT INTO item_history (rowid, id, org_id, item_id, version, kind, delta, qty_after,
                          name, sku, reason, actor_user_id, request_id, at)
SELECT rowid, id, org_id, item_id, version, kind, delta, qty_after,
       name, sku, reason, actor_user_id, request_id, at
FROM item_history_old;
DROP TABLE item_history_old;
CREATE TRIGGER item_history_no_update BEFORE UPDATE ON item_history
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;

CREATE TRIGGER item_history_no_delete BEFORE DELETE ON item_history
BEGIN
    SELECT RAISE(ABORT, 'audit_immutable');
END;
