-- `GET /stats` bytes: an event counts its size as the embedded engine stores it (92 bytes of
-- record header, then stream, type, metadata and data), as on the file backend, where this
-- backend counted metadata and data only.
UPDATE event_heads h SET bytes = COALESCE((
    SELECT sum(92 + octet_length(e.stream) + octet_length(e.event_type)
               + length(e.metadata) + length(e.data))
    FROM events e WHERE e.org_id = h.org_id), 0);
