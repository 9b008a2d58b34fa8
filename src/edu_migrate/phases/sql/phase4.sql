-- Phase 4: the course catalogue and the course offerings. Needs phase 3 (terms, departments) and
-- phase 2 (instructors).
-- Rules (docs/dirty-data.md lists them all): legacy `courses` holds one row per run. Runs whose
-- codes normalise alike ('MAT101', ' mat101', 'MAT-101', 'MAT 101', no-break spaces) are merged
-- into one catalogue course: the crosswalk maps each run to its offering and to that course. The
-- course's names and credits are those most runs agree on (ties: the latest run); each run that
-- disagrees is recorded in migration.repairs, column by column. A run with a code of nothing but
-- spaces or punctuation, a blank Azerbaijani name, credits that are not a number in 0.5–60, or an
-- edu_year/semester naming no known term is set aside with that reason; a run whose teacher or
-- department is missing or set aside is kept without it, recorded.
-- The rules read scoped_courses: every staged run in a full run, and in a sync the runs in scope
-- with every run of their codes (phase4_scope.sql).

-- name: prepare_runs
CREATE TEMP TABLE prep_runs ON COMMIT DROP AS
SELECT s.id AS source_id,
       migration.derive_id('course_offerings', s.id::text) AS id,
       migration.normalise_course_code(s.code) AS code,
       migration.clean_text(s.name_az) AS name_az,
       migration.clean_text(s.name_ru) AS name_ru,
       migration.clean_text(s.name_en) AS name_en,
       migration.parse_decimal(s.credits) AS credits,
       xo.target_id AS unit_id,
       s.org_id AS unit_source_id,
       t.id AS term_id,
       xt.target_id AS instructor_id,
       s.teacher_id,
       migration.clean_text(s.section) AS section_code,
       s.max_students, s.created_at,
       to_jsonb(s) AS legacy_row,
       CASE WHEN migration.normalise_course_code(s.code) IS NULL THEN 'blank course code'
            WHEN migration.clean_text(s.name_az) IS NULL THEN 'blank Azerbaijani name'
            WHEN migration.parse_decimal(s.credits) IS NULL
              OR migration.parse_decimal(s.credits) NOT BETWEEN 0.5 AND 60
                THEN 'unrecognised value: credits'
            WHEN t.id IS NULL THEN 'edu_year/semester name no known term'
       END AS reject_reason
FROM scoped_courses s
LEFT JOIN migration.crosswalk_organizations xo ON xo.source_id = s.org_id
LEFT JOIN migration.crosswalk_teachers xt ON xt.source_id = s.teacher_id
LEFT JOIN academic_terms t
       ON t.academic_year || '/' || t.term_type = migration.term_key(s.edu_year, s.semester);

-- name: reject_runs
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'courses', source_id, reject_reason, legacy_row, 4
FROM prep_runs WHERE reject_reason IS NOT NULL;

-- name: catalogue
CREATE TEMP TABLE catalogue ON COMMIT DROP AS
SELECT DISTINCT ON (code)
       code, migration.derive_id('courses', code) AS id, name_az, name_ru, name_en, credits, unit_id,
       unit_source_id
FROM (
    SELECT code, name_az, name_ru, name_en, credits, unit_id, unit_source_id, source_id,
           count(*) OVER (PARTITION BY code, name_az, name_ru, name_en, credits) AS agreeing_runs
    FROM prep_runs WHERE reject_reason IS NULL
) runs
ORDER BY code, agreeing_runs DESC, source_id DESC;

-- name: found_courses
-- say: Found {n} unique courses to migrate
SELECT count(*) FROM catalogue;

-- name: migrate_courses
-- say: ✓ Migrated {n} courses successfully
INSERT INTO courses (id, code, name, credit_hours, organization_unit_id)
SELECT id, code,
       jsonb_strip_nulls(jsonb_build_object('az', name_az, 'ru', name_ru, 'en', name_en)),
       credits, unit_id
FROM catalogue;

-- name: record_catalogue_disagreements
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'courses', r.source_id, d.column_name, d.run_value, d.catalogue_value,
       'catalogue field differs from the value most runs agree on: catalogue value kept', 4
FROM prep_runs r
JOIN catalogue c ON c.code = r.code
CROSS JOIN LATERAL (VALUES
    ('name_az', r.name_az, c.name_az), ('name_ru', r.name_ru, c.name_ru),
    ('name_en', r.name_en, c.name_en), ('credits', r.credits::text, c.credits::text)
) d (column_name, run_value, catalogue_value)
WHERE r.reject_reason IS NULL AND d.run_value IS DISTINCT FROM d.catalogue_value
  -- credits are numbers: '5' and '5.0' agree
  AND (d.column_name <> 'credits' OR r.credits <> c.credits)
UNION ALL
-- The catalogue course keeps the unit of the run whose names and credits most runs agree on;
-- a run of another unit (one that exists: a missing one is recorded below) loses its own.
SELECT 'courses', r.source_id, 'org_id', r.unit_source_id::text,
       CASE WHEN c.unit_id IS NOT NULL THEN c.unit_source_id::text END,
       'department differs from the catalogue course''s: catalogue value kept', 4
FROM prep_runs r
JOIN catalogue c ON c.code = r.code
WHERE r.reject_reason IS NULL AND r.unit_id IS NOT NULL AND r.unit_id IS DISTINCT FROM c.unit_id;

-- name: found_offerings
-- say: \nFound {n} course offerings to migrate
SELECT count(*) FROM scoped_courses;

-- name: migrate_offerings
-- say: ✓ Migrated {n} course offerings successfully
INSERT INTO course_offerings (id, course_id, academic_term_id, section_code, instructor_id,
                              max_students, created_at)
SELECT r.id, c.id, r.term_id, r.section_code, r.instructor_id,
       CASE WHEN r.max_students > 0 THEN r.max_students END,
       coalesce(migration.baku_time(r.created_at), migration.as_of())
FROM prep_runs r JOIN catalogue c ON c.code = r.code
WHERE r.reject_reason IS NULL;

-- name: record_offering_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'courses', source_id, 'max_students', max_students::text, NULL,
       'not a positive number: dropped', 4
FROM prep_runs WHERE reject_reason IS NULL AND max_students <= 0
UNION ALL
SELECT 'courses', source_id, 'created_at', NULL,
       (migration.as_of() AT TIME ZONE 'Asia/Baku')::text, 'missing: filled with the as-of time', 4
FROM prep_runs WHERE reject_reason IS NULL AND created_at IS NULL
UNION ALL
SELECT 'courses', source_id, 'section', legacy_row ->> 'section', section_code,
       CASE WHEN section_code IS NULL THEN 'blank: stored as none' ELSE 'white space trimmed' END, 4
FROM prep_runs
WHERE reject_reason IS NULL AND section_code IS DISTINCT FROM legacy_row ->> 'section'
UNION ALL
SELECT 'courses', source_id, d.column_name, d.old_value, d.new_value,
       CASE WHEN d.new_value IS NULL THEN 'blank: stored as none' ELSE 'white space trimmed' END, 4
FROM prep_runs
CROSS JOIN LATERAL (VALUES
    ('name_az', legacy_row ->> 'name_az', name_az), ('name_ru', legacy_row ->> 'name_ru', name_ru),
    ('name_en', legacy_row ->> 'name_en', name_en)
) d (column_name, old_value, new_value)
WHERE reject_reason IS NULL AND d.new_value IS DISTINCT FROM d.old_value
UNION ALL
SELECT 'courses', source_id, 'code', legacy_row ->> 'code', code,
       'code written differently: normalised (case, spaces, punctuation)', 4
FROM prep_runs WHERE reject_reason IS NULL AND code <> legacy_row ->> 'code'
UNION ALL
SELECT 'courses', source_id, 'credits', legacy_row ->> 'credits', credits::text,
       'digits of another script read as digits', 4
FROM prep_runs
WHERE reject_reason IS NULL AND migration.has_foreign_digits(legacy_row ->> 'credits');

-- name: record_missing_instructors
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'courses', source_id, 'teacher_id', teacher_id::text, NULL,
       'teacher missing or set aside: offering kept without instructor', 4
FROM prep_runs
WHERE reject_reason IS NULL AND instructor_id IS NULL AND teacher_id IS NOT NULL;

-- name: record_missing_units
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'courses', source_id, 'org_id', legacy_row ->> 'org_id', NULL,
       'department missing or set aside: run kept, its unit not taken for the catalogue', 4
FROM prep_runs
WHERE reject_reason IS NULL AND unit_id IS NULL AND legacy_row ->> 'org_id' IS NOT NULL;

-- name: crosswalk_runs
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_courses (source_table, source_id, target_table, target_id)
SELECT 'courses', r.source_id, 'course_offerings', r.id FROM prep_runs r
WHERE r.reject_reason IS NULL
UNION ALL
SELECT 'courses', r.source_id, 'courses', c.id FROM prep_runs r JOIN catalogue c ON c.code = r.code
WHERE r.reject_reason IS NULL;
