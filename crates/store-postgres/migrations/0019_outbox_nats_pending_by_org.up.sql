-- The relay finds the organizations with rows to publish, and each one's oldest rows, through
-- the index of pending rows, ordered by organization: a few index probes each. The event
-- log's index is so since migration 9; NATS's was ordered by `ord` alone, so its rounds read
-- every pending row (a NATS outage's whole backlog, round after round).
DROP INDEX outbox_nats_pending;
CREATE INDEX outbox_nats_pending ON outbox (org_id, ord)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;
