DROP INDEX api_tokens_by_user;
DROP INDEX submissions_by_invite;
