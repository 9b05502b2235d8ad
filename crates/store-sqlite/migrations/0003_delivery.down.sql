DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP TABLE outbox_leases;
DROP INDEX outbox_nats_pending;
ALTER TABLE outbox DROP COLUMN nats_published_at;
