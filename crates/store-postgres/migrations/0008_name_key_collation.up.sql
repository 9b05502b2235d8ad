-- Item names sort by their case-folded key. SQLite compares it byte by byte; PostgreSQL used
-- the database's collation (e.g. en_US.UTF-8 puts "ab" before "a c"), so the two backends
-- listed the same items in different orders. "C" compares bytes on PostgreSQL too (for UTF-8,
-- code point order). Rebuilds the (org_id, name_key) unique index.
ALTER TABLE items ALTER COLUMN name_key TYPE text COLLATE "C";
