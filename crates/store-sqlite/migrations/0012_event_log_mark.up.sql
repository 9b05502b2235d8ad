-- What the database remembers of the embedded event log it is used with: the log's id (kept
-- in the log's directory, file `log-id`) and a global position the log had reached. A start
-- that finds another log, or this log ending before that position, refuses (README, Event
-- log: "A log paired with its database"). One row at most.
CREATE TABLE event_log_mark (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    log_id     BLOB NOT NULL CHECK (length(log_id) = 16),
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at INTEGER NOT NULL
) STRICT;
