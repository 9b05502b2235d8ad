-- Item name keys are now Unicode canonical caseless (NFD, case folding, NFC) and emails (of
-- users, invites and submissions) NFC then lowercase (`trueline_core::validation::name_key`,
-- `accounts::Email`). Only rows with a character outside ASCII can have a different key under
-- the new rules (for ASCII both are plain lowercase); they are listed here and recomputed by
-- the store right after migrating (the same code on both backends), each row's entry
-- removed as it is done. A row whose new key another row holds keeps its old one and stays
-- listed (README, Migrations).
CREATE TABLE unicode_rekeys (
    table_name text NOT NULL CHECK (table_name IN ('items', 'users', 'invites', 'submissions')),
    row_id     uuid NOT NULL,
    PRIMARY KEY (table_name, row_id)
);

INSERT INTO unicode_rekeys (table_name, row_id)
SELECT 'items', id FROM items WHERE octet_length(name) <> char_length(name);

INSERT INTO unicode_rekeys (table_name, row_id)
SELECT 'users', id FROM users WHERE octet_length(email) <> char_length(email);

INSERT INTO unicode_rekeys (table_name, row_id)
SELECT 'invites', id FROM invites WHERE octet_length(email) <> char_length(email);

INSERT INTO unicode_rekeys (table_name, row_id)
SELECT 'submissions', id FROM submissions WHERE octet_length(email) <> char_length(email);
