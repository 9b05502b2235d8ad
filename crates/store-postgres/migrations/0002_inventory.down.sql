DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TRIGGER item_history_immutable ON item_history;
DROP TABLE item_history;
DROP TABLE items;
