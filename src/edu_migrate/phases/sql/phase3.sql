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
WITH RECURSIVE placed AS (
    SELECT source_id, 1 AS depth FROM prep_organizations
    WHERE type = 'university' AND reject_reason IS NULL
    UNION ALL
    SELECT child.source_id, placed.depth + 1
    FROM prep_organizations child JOIN placed ON child.parent_source_id = placed.source_id
    WHERE child.reject_reason IS NULL AND child.type <> 'university' AND placed.depth < 50
)
UPDATE prep_organizations o
SET reject_reason = CASE
        WHEN NOT EXISTS (SELECT 1 FROM stage.organizations p WHERE p.id = o.parent_source_id)
            THEN 'parent missing'
        WHEN EXISTS (SELECT 1 FROM prep_organizations p
                     WHERE p.source_id = o.parent_source_id AND p.reject_reason IS NOT NULL)
            THEN 'parent set aside'
        ELSE 'parent chain does not reach a university (cycle)'
    END
WHERE o.reject_reason IS NULL
  AND o.source_id NOT IN (SELECT source_id FROM placed);

-- name: reject_organizations
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'organizations', source_id, reject_reason, legacy_row, 3
FROM prep_organizations WHERE reject_reason IS NOT NULL;

-- name: migrate_organizations
-- say: ✓ Migrated {n} organizations successfully
INSERT INTO organization_units (id, parent_id, type, code, name, is_active)
SELECT o.id, p.id, o.type, o.code, o.name, coalesce(o.is_active, 1) = 1
FROM prep_organizations o
LEFT JOIN prep_organizations p ON p.source_id = o.parent_source_id
WHERE o.reject_reason IS NULL
ORDER BY o.type = 'university' DESC;

-- name: crosswalk_organizations
INSERT INTO migration.crosswalk (source_table, source_id, target_table, target_id)
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
