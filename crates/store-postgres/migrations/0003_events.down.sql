DROP TRIGGER events_immutable ON events;
DROP TABLE events;
DROP TABLE event_streams;
DROP TABLE event_heads;
