DROP TRIGGER outbox_keep_unpublished ON outbox;
DROP FUNCTION outbox_keep_unpublished();
