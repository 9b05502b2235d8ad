DROP TRIGGER outbox_keep_unpublished;
