CREATE INDEX item_history_by_item ON item_history (org_id, item_id, version);
