DROP TRIGGER audit_log_immutable ON audit_log;
DROP TABLE audit_log;
DROP FUNCTION refuse_change();
DROP TABLE api_tokens;
DROP TRIGGER memberships_owner_count ON memberships;
DROP FUNCTION memberships_owner_count();
DROP TABLE memberships;
DROP TABLE organizations;
DROP TABLE users;
