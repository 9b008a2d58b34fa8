-- edu_v2, version 25: the opt-in change feed (phases/feed.py, `edu-migrate feed start`). A
-- logical replication slot on the source, decoded with test_decoding, tells a sync which rows
-- were written, so that it reads those rows by id instead of scanning the tables.
--
-- covers_snapshot: every transaction this source snapshot does not see is decoded by the slot
--   from confirmed_lsn on. A table's mirror is followed by the feed only while the mirror's
--   snapshot is not older than it; otherwise the sync scans, as without a feed.
-- confirmed_lsn: where this record says the slot stands. The slot is advanced to it only after
--   the sync that recorded it committed, so the slot may lag behind the record (it decodes a
--   few transactions again: harmless), never run ahead of it. A slot ahead of its record (a
--   target restored from a backup, another client advancing it) skipped changes: the sync then
--   scans.
CREATE TABLE migration.change_feed (
    slot_name        text PRIMARY KEY,
    plugin           text NOT NULL,
    source_system_id text,
    source_database  text NOT NULL,
    covers_snapshot  pg_snapshot NOT NULL,
    confirmed_lsn    pg_lsn NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    advanced_at      timestamptz
);
-- One feed per target.
CREATE UNIQUE INDEX change_feed_one ON migration.change_feed ((true));
