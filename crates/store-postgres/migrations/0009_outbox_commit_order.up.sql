-- The relay publishes an organization's outbox rows in the order their transactions
-- committed. `seq` is taken at the insert, so two transactions of one organization can
-- commit in the other order, and the transaction-id guard of migration 4 (publish a row
-- only once every older transaction id has finished) did not fix that: PostgreSQL gives a
-- transaction its id at its first write, not at its outbox insert, and a third transaction
-- running with an id between theirs made only one of the two eligible.
--
-- Now each row gets `ord` at commit: a deferred trigger (it runs after the transaction's
-- last statement, so no other transaction waits for a row lock it still needs) takes a
-- per-organization advisory lock, held until the commit is visible, and numbers the row. A
-- transaction with rows of several organizations (a combined batch of quantity changes)
-- inserts them in the order of these locks' keys, so two such never wait for each other.
-- So within an organization `ord` follows commit order, and a row without a committed
-- `ord` yet can only get a larger one than every committed row: the relay publishes the
-- committed rows in `ord` order and needs no guard.
ALTER TABLE outbox ADD COLUMN ord bigint;
CREATE SEQUENCE outbox_ord_seq OWNED BY outbox.ord;
UPDATE outbox SET ord = seq;
SELECT setval('outbox_ord_seq', COALESCE(max(seq), 0) + 1, false) FROM outbox;

CREATE FUNCTION outbox_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('trueline.outbox ' || NEW.org_id::text, 0));
    UPDATE outbox SET ord = nextval('outbox_ord_seq') WHERE seq = NEW.seq;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER outbox_commit_order AFTER INSERT ON outbox
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION outbox_commit_order();
-- Also with session_replication_role = replica (a restore that disables triggers must not
-- leave rows without their number).
ALTER TABLE outbox ENABLE ALWAYS TRIGGER outbox_commit_order;

DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (org_id, ord) WHERE published_at IS NULL;
DROP INDEX outbox_nats_pending;
CREATE INDEX outbox_nats_pending ON outbox (ord)
WHERE published_at IS NOT NULL AND nats_published_at IS NULL;

ALTER TABLE outbox DROP COLUMN xid;
