-- item_history_by_item (org_id, item_id, version) duplicated the UNIQUE (item_id, version)
-- index for the only query by item (`WHERE org_id = ? AND item_id = ? AND version > ?`), and
-- every audit record paid for both: one more random index page per quantity change, which
-- under deltas spread over many items is a measurable share of each commit (docs/benchmarks.md).
DROP INDEX item_history_by_item;
