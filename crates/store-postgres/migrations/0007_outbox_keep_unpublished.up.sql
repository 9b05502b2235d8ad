-- The outbox purge deletes only rows the event log already has (outbox.retention_hours); the
-- database refuses the rest, so no purge can lose a change before it was published.
CREATE FUNCTION outbox_keep_unpublished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outbox_unpublished' USING ERRCODE = 'check_violation',
        CONSTRAINT = 'outbox_keep_unpublished';
END
$$;

CREATE TRIGGER outbox_keep_unpublished BEFORE DELETE ON outbox
FOR EACH ROW WHEN (OLD.published_at IS NULL) EXECUTE FUNCTION outbox_keep_unpublished();
