DROP INDEX outbox_nats_pending;
CREATE INDEX outbox_nats_pending ON outbox (seq)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at IS NULL;
