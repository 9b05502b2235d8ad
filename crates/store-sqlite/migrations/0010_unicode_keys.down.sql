-- Keys already recomputed stay as they are: the earlier rule (plain lowercase) finds every
-- ASCII name as before, and a recomputed key only makes more names collide, never fewer.
DROP TABLE unicode_rekeys;
