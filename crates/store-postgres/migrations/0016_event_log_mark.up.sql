-- What the database remembers of the embedded event log it is used with (events.backend =
-- "file" beside PostgreSQL, one instance): the log's id (kept in the log's directory, file
-- `log-id`) and a global position the log had reached. A start that finds another log, or
-- this log ending before that position, refuses. One row at most.
CREATE TABLE event_log_mark (
    singleton  integer PRIMARY KEY CHECK (singleton = 1),
    log_id     uuid NOT NULL,
    position   bigint NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL
);
