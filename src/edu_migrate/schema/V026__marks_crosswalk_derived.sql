-- edu_v2, version 26: a mark's legacy key on its own row, and the marks' crosswalk derived from
-- it instead of written beside it.
--
-- Why: the marks' crosswalk partition held one row per migrated mark (3.2 million at scale 1),
-- each a copy of what the mark already determines: its id is migration.derive_id('grades', its
-- legacy id), a function of the legacy id and the secret. Writing that partition and its three
-- indexes cost a full run about 8 s of 57 at scale 1, and a sync a delete and an insert in it
-- for every changed mark (docs/benchmarks.md, "The marks' crosswalk, derived"). The way back,
-- from the mark to its legacy id, now comes from the row: grades.legacy_id, with a unique
-- index (one mark per legacy mark, and the look-ups by legacy id of validation and cutover).
-- migration.crosswalk stays the one interface: a view of the other tables' partitions
-- (migration.crosswalk_rows) and of the marks (migration.crosswalk_grades, a view too).
--
-- A mark created on edu_v2 after a cutover has no legacy id here: migration.created_rows holds
-- the one it was given, as for every table. A mark deleted on edu_v2 keeps its legacy id in the
-- audit log's image of the deleted row, where a fallback reads it (phases/carry_back.py).

ALTER TABLE grades ADD COLUMN legacy_id bigint;
COMMENT ON COLUMN grades.legacy_id IS
    'The legacy grades.id this mark was migrated from (its id is derived from it); none for a '
    'mark created on edu_v2, whose legacy id, once it has one, is in migration.created_rows.';

-- Each legacy mark's row, once: an upgrade from version 25 moves the partition's content here
-- without the rows' audit (it is the tool's bookkeeping, not an application's write) and
-- without the marks' own checks (no value of a mark changes).
ALTER TABLE grades DISABLE TRIGGER audit_row_change;
ALTER TABLE grades DISABLE TRIGGER marks_hold_together;
UPDATE grades g SET legacy_id = x.source_id
FROM migration.crosswalk_grades x WHERE x.target_id = g.id;
ALTER TABLE grades ENABLE TRIGGER audit_row_change;
ALTER TABLE grades ENABLE TRIGGER marks_hold_together;
CREATE UNIQUE INDEX grades_legacy_id_key ON grades (legacy_id);

-- The relation each legacy table is read from (the mapping's `shown` name), for the tables whose
-- crosswalk is derived; the partitions of the others keep it in their rows' default.
CREATE TABLE migration.source_relations (
    source_table text PRIMARY KEY,
    relation     text NOT NULL
);
INSERT INTO migration.source_relations (source_table, relation)
SELECT 'grades', min(source_relation) FROM migration.crosswalk_grades
HAVING min(source_relation) IS NOT NULL;

-- Rows of the old partition whose mark is gone (deleted on edu_v2 after a cutover, before this
-- version): a fallback still needs their legacy ids, which the audit log's image of the deleted
-- row does not hold from before this version. Empty on every database migrated after it; a full
-- run of phase 5 empties it.
CREATE TABLE migration.crosswalk_grades_deleted (
    -- the crosswalk's columns, so that the incremental validation notes its writes as it notes
    -- the crosswalk's (note_legacy_ranges)
    source_table   text NOT NULL DEFAULT 'grades' CHECK (source_table = 'grades'),
    source_id      bigint PRIMARY KEY,
    target_id      uuid NOT NULL
);
INSERT INTO migration.crosswalk_grades_deleted (source_id, target_id)
SELECT x.source_id, x.target_id FROM migration.crosswalk_grades x
WHERE NOT EXISTS (SELECT 1 FROM grades g WHERE g.id = x.target_id AND g.legacy_id = x.source_id);

-- migration.legacy_keys names migration.crosswalk: it is made again below, over the view.
DROP VIEW migration.legacy_keys;
ALTER TABLE migration.crosswalk DETACH PARTITION migration.crosswalk_grades;
DROP TABLE migration.crosswalk_grades;
ALTER TABLE migration.crosswalk RENAME TO crosswalk_rows;
COMMENT ON TABLE migration.crosswalk_rows IS
    'The crosswalk of every legacy table but grades, one partition per table; '
    'migration.crosswalk adds the marks.';

-- Not updatable (a union): a DELETE meant for the crosswalk must not delete marks.
CREATE VIEW migration.crosswalk_grades AS
SELECT 'grades'::text AS source_table, g.legacy_id AS source_id, 'grades'::text AS target_table,
       g.id AS target_id,
       (SELECT r.relation FROM migration.source_relations r WHERE r.source_table = 'grades')
           AS source_relation
FROM public.grades g
WHERE g.legacy_id IS NOT NULL
UNION ALL
SELECT d.source_table, d.source_id, 'grades', d.target_id,
       (SELECT r.relation FROM migration.source_relations r WHERE r.source_table = 'grades')
FROM migration.crosswalk_grades_deleted d;
COMMENT ON VIEW migration.crosswalk_grades IS
    'The marks'' crosswalk, derived: each mark with a legacy id, and the marks deleted on edu_v2 '
    'before version 26.';

CREATE VIEW migration.crosswalk AS
SELECT source_table, source_id, target_table, target_id, source_relation
FROM migration.crosswalk_rows
UNION ALL
SELECT source_table, source_id, target_table, target_id, source_relation
FROM migration.crosswalk_grades;
COMMENT ON VIEW migration.crosswalk IS
    'Every migrated legacy row and the edu_v2 row it went to: migration.crosswalk_rows and the '
    'marks (migration.crosswalk_grades).';

CREATE VIEW migration.legacy_keys AS
SELECT l.target_table, c.target_id, c.source_id
FROM migration.legacy_tables l
JOIN migration.crosswalk c ON c.source_table = l.source_table
WHERE migration.derive_id(l.id_kind, c.source_id::text) = c.target_id
UNION ALL
SELECT r.target_table, r.target_id, r.source_id FROM migration.created_rows r;
COMMENT ON VIEW migration.legacy_keys IS
    'The legacy key of every edu_v2 row that has one: the crosswalk''s surviving legacy row, or '
    'the legacy id given to a row created on edu_v2 after a cutover.';

-- The incremental validation notes the legacy ranges written in the crosswalk
-- (migration.note_legacy_ranges, V023). The marks' crosswalk is now written with the marks: a
-- trigger on grades passes the legacy table, 'grades', as its argument, and the rows' legacy ids
-- are then their legacy_id (checks/incremental.py puts the triggers in place). The transition
-- tables are read by EXECUTE, which sees them as a static query does.
CREATE OR REPLACE FUNCTION migration.note_legacy_ranges() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    legacy text := CASE WHEN TG_NARGS > 0 THEN format('%L::text, legacy_id', TG_ARGV[0])
                        ELSE 'source_table, source_id' END;
    rows text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM migration.validation_baseline
                   WHERE state IN ('building', 'ready')) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE migration.validation_baseline SET state = 'invalid',
            reason = format('%s was truncated', TG_TABLE_NAME);
        RETURN NULL;
    END IF;
    FOREACH rows IN ARRAY CASE TG_OP WHEN 'UPDATE' THEN ARRAY['old_rows', 'new_rows']
                                      WHEN 'DELETE' THEN ARRAY['old_rows']
                                      ELSE ARRAY['new_rows'] END LOOP
        EXECUTE format(
            'INSERT INTO migration.validation_touched_ranges '
            'SELECT DISTINCT r.legacy_table, r.legacy_id >> 6 FROM (SELECT %s FROM %I) '
            'r (legacy_table, legacy_id) WHERE r.legacy_table IN (''course_students'', ''grades'') '
            'AND r.legacy_id IS NOT NULL ON CONFLICT DO NOTHING', legacy, rows);
    END LOOP;
    RETURN NULL;
END $$;
