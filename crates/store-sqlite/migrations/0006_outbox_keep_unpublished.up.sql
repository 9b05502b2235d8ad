-- The outbox purge deletes only rows the event log already has (outbox.retention_hours); the
-- database refuses the rest, so no purge can lose a change before it was published.
-- (DROP TABLE does not fire it: migrations can still go down.)
CREATE TRIGGER outbox_keep_unpublished BEFORE DELETE ON outbox
WHEN OLD.published_at IS NULL
BEGIN
    SELECT RAISE(ABORT, 'outbox_unpublished');
END;
