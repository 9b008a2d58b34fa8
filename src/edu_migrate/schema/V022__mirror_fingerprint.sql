-- edu_v2, version 22: what each mirrored table was staged from, beside its horizon, so that a
-- sync trusts the horizon only when nothing under the mirror changed (phases/changes.py).

-- source_fingerprint: a digest of the definitions the staged rows were read through (the
--   mapping of the table, the source relation and its columns' numbers, types and typmods, the
--   labels of enum types, the functions a mapping expression may call, the settings a cast
--   depends on). None of these writes a row version: a change is seen only here.
-- source_snapshot: the source snapshot the mirror was brought to (its xmin is the horizon). A
--   sync whose own snapshot does not contain it is older than the mirror and is refused.
-- source_lsn, source_timeline: the source's WAL position and timeline at that snapshot. A
--   source restored to an earlier point, or a promoted standby, shows a position that went back
--   or another timeline: its transaction ids no longer say what was written since.
-- stale_phases: phases that derived their rows from an earlier copy of this table than the one
--   staged now (a crash emptied the copy and a later phase staged it again, on a new snapshot):
--   the next sync derives them again.
ALTER TABLE migration.mirror_state
    ADD COLUMN source_fingerprint text,
    ADD COLUMN source_snapshot pg_snapshot,
    ADD COLUMN source_lsn pg_lsn,
    ADD COLUMN source_timeline bigint,
    ADD COLUMN stale_phases smallint[] NOT NULL DEFAULT '{}';
