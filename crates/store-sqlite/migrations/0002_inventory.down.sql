DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TRIGGER item_history_no_delete;
DROP TRIGGER item_history_no_update;
DROP TABLE item_history;
DROP TABLE items;
