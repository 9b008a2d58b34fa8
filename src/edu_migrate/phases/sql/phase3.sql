-- Phase 3: organization units and academic terms.
-- Rules (docs/dirty-data.md lists them all): type_id 1..4 is university/faculty/department/
-- program, anything else is set aside ('unrecognised value: type_id'); a parent of NULL or 0
-- means none. A unit is migrated when its chain of parents reaches a university; a unit whose
-- parent is missing or set aside, that is its own parent, or that sits in a cycle is set aside
-- with that reason, and so are its descendants. Terms are the distinct (edu_year, semester)
-- pairs of the course runs that name a real academic year ('2022-2023', '2022 / 2023'; semester
-- 1 fall, 2 spring).

-- name: found_organizations
-- say: Found {n} organizations to migrate
SELECT count(*) FROM stage.organizations;

-- name: prepare_organizations
CREATE TEMP TABLE prep_organizations ON COMMIT DROP AS
SELECT s.id AS source_id,
       migration.derive_id('organization_units', s.id::text) AS id,
       nullif(s.parent_id, 0) AS parent_source_id,
       CASE s.type_id WHEN 1 THEN 'university' WHEN 2 THEN 'faculty' WHEN 3 THEN 'department'
                      WHEN 4 THEN 'program' END AS type,
       migration.clean_text(s.code) AS code,
       jsonb_strip_nulls(jsonb_build_object(
           'az', migration.clean_text(s.name_az),
           'ru', migration.clean_text(s.name_ru),
           'en', migration.clean_text(s.name_en))) AS name,
       s.is_active,
       to_jsonb(s) AS legacy_row,
       CASE WHEN s.type_id IS NULL OR s.type_id NOT BETWEEN 1 AND 4 THEN 'unrecognised value: type_id'
            WHEN migration.clean_text(s.name_az) IS NULL THEN 'blank Azerbaijani name'
            WHEN s.type_id = 1 AND nullif(s.parent_id, 0) IS NOT NULL THEN 'university with a parent'
            WHEN s.type_id <> 1 AND nullif(s.parent_id, 0) IS NULL THEN 'parent missing'
            WHEN s.parent_id = s.id THEN 'unit is its own parent'
       END AS reject_reason
FROM stage.organizations s;

-- name: reach_from_universities
-- Walk down from the universities; whatever is not reached cannot be placed in the hierarchy.
-- Each unit has one parent, so the walk visits each unit once and ends however deep the tree.
-- A unit not reached has a parent that is missing, or set aside (its own parent's reason is
-- settled first, from the top down), or else its chain of parents goes round in a cycle.
DO $$
BEGIN
    CREATE TEMP TABLE placed ON COMMIT DROP AS
    WITH RECURSIVE walk AS (
        SELECT source_id FROM prep_organizations
        WHERE type = 'university' AND reject_reason IS NULL
        UNION ALL
        SELECT child.source_id
        FROM prep_organizations child JOIN walk ON child.parent_source_id = walk.source_id
        WHERE child.reject_reason IS NULL AND child.type <> 'university'
    )
    SELECT source_id FROM walk;
    UPDATE prep_organizations o SET reject_reason = 'parent missing'
    WHERE o.reject_reason IS NULL AND o.source_id NOT IN (SELECT source_id FROM placed)
      AND NOT EXISTS (SELECT 1 FROM stage.organizations p WHERE p.id = o.parent_source_id);
    LOOP
        UPDATE prep_organizations o SET reject_reason = 'parent set aside'
        WHERE o.reject_reason IS NULL AND o.source_id NOT IN (SELECT source_id FROM placed)
          AND EXISTS (SELECT 1 FROM prep_organizations p
                      WHERE p.source_id = o.parent_source_id AND p.reject_reason IS NOT NULL);
        EXIT WHEN NOT FOUND;
    END LOOP;
    UPDATE prep_organizations o
    SET reject_reason = 'parent chain does not reach a university (cycle)'
    WHERE o.reject_reason IS NULL AND o.source_id NOT IN (SELECT source_id FROM placed);
END $$;

-- name: reject_organizations
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'organizations', source_id, reject_reason, legacy_row, 3
FROM prep_organizations WHERE reject_reason IS NOT NULL;

-- name: record_organization_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'organizations', source_id, 'is_active', legacy_row ->> 'is_active',
       (is_active IS NULL)::text,
       CASE WHEN is_active IS NULL THEN 'blank: taken as active'
            ELSE 'not 0 or 1: taken as inactive' END, 3
FROM prep_organizations
WHERE reject_reason IS NULL AND (is_active IS NULL OR is_active NOT IN (0, 1))
UNION ALL
SELECT 'organizations', source_id, d.column_name, d.old_value, d.new_value,
       CASE WHEN d.new_value IS NULL THEN 'blank: stored as none' ELSE 'white space trimmed' END, 3
FROM prep_organizations
CROSS JOIN LATERAL (VALUES
    ('code', legacy_row ->> 'code', code),
    ('name_az', legacy_row ->> 'name_az', name ->> 'az'),
    ('name_ru', legacy_row ->> 'name_ru', name ->> 'ru'),
    ('name_en', legacy_row ->> 'name_en', name ->> 'en')
) d (column_name, old_value, new_value)
WHERE reject_reason IS NULL AND d.new_value IS DISTINCT FROM d.old_value;

-- name: migrate_organizations
-- say: ✓ Migrated {n} organizations successfully
INSERT INTO organization_units (id, parent_id, type, code, name, is_active)
SELECT o.id, p.id, o.type, o.code, o.name, coalesce(o.is_active, 1) = 1
FROM prep_organizations o
LEFT JOIN prep_organizations p ON p.source_id = o.parent_source_id
WHERE o.reject_reason IS NULL
ORDER BY o.type = 'university' DESC;

-- name: crosswalk_organizations
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_organizations (source_table, source_id, target_table, target_id)
SELECT 'organizations', source_id, 'organization_units', id
FROM prep_organizations WHERE reject_reason IS NULL;

-- name: terms_header
-- say: \nCREATING ACADEMIC TERMS...
SELECT 0;

-- name: create_terms
-- say: ✓ Created {n} academic terms
INSERT INTO academic_terms (id, academic_year, term_type, name, start_date, end_date)
SELECT migration.derive_id('academic_terms', t.academic_year || '/' || t.term_type),
       t.academic_year, t.term_type,
       jsonb_build_object(
           'az', t.academic_year || CASE t.term_type WHEN 'fall' THEN ' payız' ELSE ' yaz' END
                 || ' semestri',
           'ru', t.academic_year || CASE t.term_type WHEN 'fall' THEN ' осенний' ELSE ' весенний' END
                 || ' семестр',
           'en', CASE t.term_type WHEN 'fall' THEN 'Fall ' ELSE 'Spring ' END || t.academic_year),
       CASE t.term_type WHEN 'fall' THEN make_date(t.first_year, 9, 15)
                        ELSE make_date(t.first_year + 1, 2, 15) END,
       CASE t.term_type WHEN 'fall' THEN make_date(t.first_year + 1, 1, 31)
                        ELSE make_date(t.first_year + 1, 6, 30) END
FROM (
    SELECT split_part(k.term, '/', 1) AS academic_year, split_part(k.term, '/', 2) AS term_type,
           split_part(k.term, '-', 1)::integer AS first_year
    FROM (SELECT DISTINCT migration.term_key(c.edu_year, c.semester) AS term
          FROM stage.courses c) k
    WHERE k.term IS NOT NULL
) t
ORDER BY 1;

-- name: mark_current_term
-- The current term is the latest one that has started.
UPDATE academic_terms SET is_current = true
WHERE id = (SELECT id FROM academic_terms WHERE start_date <= migration.as_of_date()
            ORDER BY start_date DESC LIMIT 1);
