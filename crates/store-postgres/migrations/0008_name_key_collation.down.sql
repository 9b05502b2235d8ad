ALTER TABLE items ALTER COLUMN name_key TYPE text COLLATE "default";
