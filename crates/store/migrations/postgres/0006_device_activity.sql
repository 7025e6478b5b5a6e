-- When the server last committed a reading of each device (the server's clock, Unix ms), gathered in memory on the
-- ingest path and flushed about every second; NULL until the first one. The console lists a collection's devices by
-- label or by this time. (Numbered as SQLite's migration of the same change.)

ALTER TABLE devices ADD COLUMN last_seen_at BIGINT;

-- The console's two orders within a collection, read a page at a time: with 10 000 devices a first page by
-- activity took 6-7 ms sorting them all, 2-3 ms along the index. NULLS LAST: the never seen come last, as the
-- listing orders them.
CREATE INDEX devices_by_label_in_collection ON devices (collection_id, label);
CREATE INDEX devices_by_activity_in_collection ON devices (collection_id, last_seen_at DESC NULLS LAST, id);
