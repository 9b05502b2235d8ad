-- The event log on PostgreSQL (events.backend = "postgres"): the same API as the embedded
-- engine for deployments with many server instances.

-- One row per organization: the last position assigned. Appends lock this row, so positions
-- are assigned and committed in order per organization: a catch-up reader that has seen
-- position N can never later find an N-1 that committed after it.
CREATE TABLE event_heads (
    org_id        uuid PRIMARY KEY,
    last_position bigint NOT NULL DEFAULT 0 CHECK (last_position >= 0),
    bytes         bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0)
);

CREATE TABLE event_streams (
    org_id  uuid NOT NULL,
    stream  text NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (org_id, stream)
);

CREATE TABLE events (
    org_id         uuid NOT NULL,
    position       bigint NOT NULL CHECK (position >= 1),
    id             uuid NOT NULL,
    stream         text NOT NULL CHECK (octet_length(stream) BETWEEN 1 AND 256),
    stream_version bigint NOT NULL CHECK (stream_version >= 1),
    event_type     text NOT NULL CHECK (octet_length(event_type) BETWEEN 1 AND 128),
    -- Exact bytes, as the embedded engine keeps them.
    data           bytea NOT NULL,
    metadata       bytea NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (org_id, position),
    CONSTRAINT events_id_key UNIQUE (org_id, id),
    CONSTRAINT events_stream_version_key UNIQUE (org_id, stream, stream_version)
);

CREATE INDEX events_by_type ON events (org_id, event_type, position);

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION refuse_change();
