-- During a rolling upgrade, instances of a version before migration 17 keep running beside
-- the new ones and insert review records without `seq`: NOT NULL refused them (500, the
-- review not made) until they were replaced. This trigger numbers such a row as its
-- submission's next step, exactly as the current store does in its INSERT: those versions
-- also take the submission's row lock (SELECT … FOR UPDATE) and update its status before
-- inserting, so transitions of one submission still run one after another, and the trigger
-- function's query (a volatile function: a fresh snapshot per statement under READ
-- COMMITTED) sees every earlier transition's row. A row that names its `seq` is left alone
-- (CHECK and UNIQUE judge it as before). SQLite needs no such trigger: one process uses its
-- database, so no earlier version writes beside the current one.
CREATE FUNCTION submission_reviews_next_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seq := (SELECT coalesce(max(seq), 0) + 1 FROM submission_reviews
                WHERE submission_id = NEW.submission_id);
    RETURN NEW;
END
$$;

CREATE TRIGGER submission_reviews_next_seq BEFORE INSERT ON submission_reviews
    FOR EACH ROW WHEN (NEW.seq IS NULL) EXECUTE FUNCTION submission_reviews_next_seq();
