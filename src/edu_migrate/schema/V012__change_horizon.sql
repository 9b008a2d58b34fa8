-- edu_v2, version 12: the horizon from which a sync reads the source's changes.

-- The oldest transaction id (64 bits) the snapshot of each mirrored table saw running. Every row
-- written since then carries a transaction id at least this new: a sync reads only those rows
-- (phases/changes.py). None for a mirror staged before this version: compared row by row once.
ALTER TABLE migration.mirror_state ADD COLUMN source_horizon bigint;
