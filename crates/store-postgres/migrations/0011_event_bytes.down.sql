UPDATE event_heads h SET bytes = COALESCE((
    SELECT sum(length(e.metadata) + length(e.data))
    FROM events e WHERE e.org_id = h.org_id), 0);
