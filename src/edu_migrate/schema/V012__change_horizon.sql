-- edu_v2, version 12: the horizon from which a sync reads the source's changes.

-- The oldest transaction id (64 bits) the snapshot of each mirrored table saw running. Every row
-- written since then carries a transaction id at least this new: a sync reads only those rows
-- (phases/changes.py). None for a mirror staged before this version: compared row by row once.
ALTER TABLE migration.mirror_state ADD COLUMN source_horizon bigint;

-- After each load the rows of the large crosswalk partitions whose source table is not yet
-- recorded are looked for (runner.record_source_tables); a sync adds a few thousand rows to
-- partitions of millions. An index of only those rows (none, once recorded) finds them without
-- a scan.
CREATE INDEX crosswalk_course_students_unrecorded_idx
    ON migration.crosswalk_course_students (source_id) WHERE source_relation IS NULL;
CREATE INDEX crosswalk_grades_unrecorded_idx
    ON migration.crosswalk_grades (source_id) WHERE source_relation IS NULL;
