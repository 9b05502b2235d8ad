-- Two lookups that had no index to search, so each read a whole table:
-- * a candidate's every request reads their invite's submission, by `invite_id`: a scan of
--   every submission in the database (all organizations), slower with every submission made;
-- * a password change finds the user's live tokens by `user_id` alone, under the write lock:
--   a scan of every token ever issued (one per login; revoked and expired ones are kept).
CREATE INDEX submissions_by_invite ON submissions (invite_id);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, org_id);
