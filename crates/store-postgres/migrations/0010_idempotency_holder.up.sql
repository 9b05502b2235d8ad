-- Which request holds a pending claim: completing or releasing the claim needs it, so a
-- request whose claim expired and was taken over by a retry can neither complete the retry's
-- claim with its own response nor delete it. NULL for rows written before, and for keys the
-- combined quantity path claims and completes in one transaction.
ALTER TABLE idempotency_keys ADD COLUMN holder uuid;
