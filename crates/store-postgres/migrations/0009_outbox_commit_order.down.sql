ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();

DROP INDEX outbox_nats_pending;
CREATE INDEX outbox_nats_pending ON outbox (seq)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;

DROP TRIGGER outbox_commit_order ON outbox;
DROP FUNCTION outbox_commit_order();
ALTER TABLE outbox DROP COLUMN ord;
