-- The bare guarded UPDATE the server runs for a quantity delta, on ONE row, one transaction
-- per statement (autocommit, synchronous_commit=on): the PostgreSQL ceiling for hot-item.
-- Deltas are uniform in ±1..5, like trueline-bench's hot-item.
\set magnitude random(1, 5)
\set sign random(0, 1)
\set delta (2 * :sign - 1) * :magnitude
UPDATE items SET qty = qty + :delta WHERE id = 1 AND qty + :delta >= 0;
