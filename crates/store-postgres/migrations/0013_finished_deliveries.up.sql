-- Finished webhook deliveries (and their attempts, by cascade) are purged after a retention;
-- this index finds the oldest without reading the pending ones or the whole table.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE state <> 'pending';
