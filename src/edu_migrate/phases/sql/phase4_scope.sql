-- Phase 4 in a sync: which legacy course runs it derives again (phases/sync.py). The rules are
-- phase4.sql's, run over scoped_courses, which holds the runs named here; every other run, and
-- the catalogue course of every other code, would come out exactly as it is, so it is left alone.
--
-- A run's outcome reads the run itself, the as-of time (a missing created_at is the as-of time),
-- its department (phase 3's crosswalk of organizations), its teacher (phase 2's crosswalk of
-- teachers) and the term its edu_year and semester name (phase 3's academic_terms: a term of
-- every key the runs phase 3 read name, which need not be the copy phase 4 reads, when phase 3
-- read an earlier one; a term that came or went may then change an unchanged run). A catalogue
-- course is decided from every run of its code (normalised: the names and credits most runs
-- agree on, the unit of the run chosen), and each run's repairs compare it with its course. So
-- the group is the normalised code: a run in scope brings every run of its code, and of the code
-- it had before it changed (old_courses). Groups are disjoint, so one pass closes the scope.
--
-- Reads delta_courses and old_courses (the sync built them), and dependencies_changed (what
-- phases 2 and 3 decide differently since this sync began, sync.sql).

-- name: run_dependencies_changed
-- The departments and teachers whose outcome (their edu_v2 row, or set aside) phases 2 and 3
-- changed in this sync, and the terms that came or went (sync.sql's dependencies_changed).
CREATE TEMP TABLE run_dependencies_changed ON COMMIT DROP AS
SELECT * FROM dependencies_changed
WHERE source_table IN ('organizations', 'teachers', 'academic_terms');

-- name: scope_courses
CREATE TEMP TABLE scope_courses (id bigint PRIMARY KEY) ON COMMIT DROP;

-- name: seed_courses
-- (SELECT …) asks once, and when the as-of time stayed, the scan is not made at all. A term
-- that came or went may change the term of any run: every run is in scope.
INSERT INTO scope_courses (id)
SELECT id FROM delta_courses
UNION
SELECT id FROM stage.courses WHERE (SELECT migration.as_of_moved()) AND created_at IS NULL
UNION
SELECT c.id FROM stage.courses c
JOIN run_dependencies_changed d ON d.source_table = 'organizations' AND d.source_id = c.org_id
UNION
SELECT c.id FROM stage.courses c
JOIN run_dependencies_changed d ON d.source_table = 'teachers' AND d.source_id = c.teacher_id
UNION
SELECT c.id FROM stage.courses c
WHERE EXISTS (SELECT 1 FROM run_dependencies_changed d WHERE d.source_table = 'academic_terms');

-- name: scope_codes
-- The normalised codes of the runs in scope, now and before they changed: the catalogue courses
-- derived again (a code no run has any more loses its course).
CREATE TEMP TABLE scope_codes ON COMMIT DROP AS
SELECT migration.normalise_course_code(c.code) AS code
FROM stage.courses c JOIN scope_courses s USING (id)
UNION
SELECT migration.normalise_course_code(o.code) FROM old_courses o;

-- name: grow_courses_by_code
-- Every run of a code in scope. (Normalising every staged code is what the phase does anyway,
-- for 6,020 runs at scale 1; a second pass adds nobody.)
INSERT INTO scope_courses (id)
SELECT c.id FROM stage.courses c
WHERE migration.normalise_course_code(c.code) IN (SELECT code FROM scope_codes)
ON CONFLICT DO NOTHING;

-- name: scope_keys_course_offerings
-- The edu_v2 rows in scope, by the ids the rules derive (phase4.sql): those the rules may write
-- again, delete or leave.
CREATE TEMP TABLE scope_keys_course_offerings ON COMMIT DROP AS
SELECT migration.derive_id('course_offerings', id::text) AS id FROM scope_courses;

-- name: scope_keys_courses
CREATE TEMP TABLE scope_keys_courses ON COMMIT DROP AS
SELECT migration.derive_id('courses', code) AS id FROM scope_codes WHERE code IS NOT NULL;

-- name: clear_records_in_scope
-- What phase 4 decided of the runs in scope: decided again by its rules.
WITH crosswalk AS (
    DELETE FROM migration.crosswalk_courses x USING scope_courses s
    WHERE x.source_id = s.id RETURNING 1
), rejected AS (
    DELETE FROM migration.rejected_rows r USING scope_courses s
    WHERE r.phase = 4 AND r.source_table = 'courses' AND r.source_id = s.id RETURNING 1
), repaired AS (
    DELETE FROM migration.repairs r USING scope_courses s
    WHERE r.phase = 4 AND r.source_table = 'courses' AND r.source_id = s.id RETURNING 1
)
SELECT (SELECT count(*) FROM crosswalk) + (SELECT count(*) FROM rejected)
     + (SELECT count(*) FROM repaired);
