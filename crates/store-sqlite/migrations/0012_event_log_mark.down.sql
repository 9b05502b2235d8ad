DROP TABLE event_log_mark;
