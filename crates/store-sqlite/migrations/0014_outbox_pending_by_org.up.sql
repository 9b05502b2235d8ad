-- The relay finds the organizations with rows to publish, and each one's oldest rows, through
-- the index of pending rows: ordered by organization (as on PostgreSQL since its migration
-- 9), each is a few seeks. Ordered by `seq` alone, every round scanned the whole backlog
-- (0.7 s at a million pending rows), so a relay catching up after an outage slowed down
-- the further behind it was.
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (org_id, seq) WHERE published_at IS NULL;
DROP INDEX outbox_nats_pending;
CREATE INDEX outbox_nats_pending ON outbox (org_id, seq)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;
