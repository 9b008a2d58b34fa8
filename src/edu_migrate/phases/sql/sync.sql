-- The catch-up's scope: which legacy rows of phase 5 a sync derives again.
-- Phases 1–4 (small tables, group rules throughout) are derived again whole when anything they
-- read changed; phase 5 only for the rows in scope. A row is in scope when it changed, when a row
-- its outcome depends on came out differently (its student, its course run, its teacher, its
-- enrollment), when the as-of time moved across one of its dates, or when it shares a group with
-- such a row (two enrollments of one student in one run are merged). Every other row would come
-- out exactly as it is, so it is left alone. Reads delta_<table> (ids inserted, updated or deleted
-- in the source) and old_<table> (those rows as they were), which the sync has built.

-- name: dependency_outcomes
-- What phase 5 reads of phases 2 and 4, and phase 4 of phases 2 and 3 (phase4_scope.sql), per
-- legacy id: its target, or none when set aside; and the terms, by id (they have no legacy id).
CREATE TEMP VIEW dependency_outcomes AS
SELECT source_table, source_id, target_id FROM migration.crosswalk_rows
WHERE source_table IN ('students', 'teachers', 'organizations')
   OR (source_table = 'courses' AND target_table = 'course_offerings')
UNION ALL
SELECT source_table, source_id, NULL FROM migration.rejected_rows
WHERE source_table IN ('students', 'teachers', 'courses', 'organizations')
UNION ALL
SELECT 'academic_terms', NULL, id FROM academic_terms;

-- name: dependencies_before
CREATE TEMP TABLE dependencies_before ON COMMIT DROP AS SELECT * FROM dependency_outcomes;

-- name: dependencies_changed
-- The legacy rows whose outcome differs from dependencies_before, as the phases stand when it
-- is read: by phase 4 (phase4_scope.sql) after phases 2 and 3, and below after phases 1-4.
CREATE TEMP VIEW dependencies_changed AS
SELECT DISTINCT source_table, source_id FROM (
    (SELECT * FROM dependencies_before EXCEPT SELECT * FROM dependency_outcomes)
    UNION ALL
    (SELECT * FROM dependency_outcomes EXCEPT SELECT * FROM dependencies_before)
) d;

-- name: changed_dependencies
CREATE TEMP TABLE changed_dependencies ON COMMIT DROP AS SELECT * FROM dependencies_changed;

-- name: scope_course_students
CREATE TEMP TABLE scope_course_students ON COMMIT DROP AS
WITH seed AS (
    SELECT id FROM delta_course_students
    UNION
    SELECT s.id FROM stage.course_students s
    JOIN changed_dependencies d ON d.source_table = 'students' AND d.source_id = s.student_id
    UNION
    SELECT s.id FROM stage.course_students s
    JOIN changed_dependencies d ON d.source_table = 'courses' AND d.source_id = s.course_id
    UNION
    -- a missing enrollment time is the as-of time; (SELECT …) asks once, and when the as-of
    -- time stayed, the scan is not made at all
    SELECT s.id FROM stage.course_students s
    WHERE (SELECT migration.as_of_moved()) AND s.enrolled_at IS NULL
), touched_groups AS (
    SELECT s.student_id, s.course_id FROM stage.course_students s JOIN seed USING (id)
    UNION
    SELECT o.student_id, o.course_id FROM old_course_students o
)
SELECT id FROM seed
UNION
SELECT s.id FROM stage.course_students s
JOIN touched_groups g ON g.student_id = s.student_id AND g.course_id = s.course_id;

-- name: scope_grades
CREATE TEMP TABLE scope_grades ON COMMIT DROP AS
SELECT id FROM delta_grades
UNION
SELECT g.id FROM stage.grades g JOIN scope_course_students s ON s.id = g.course_student_id
UNION
SELECT g.id FROM stage.grades g
JOIN changed_dependencies d ON d.source_table = 'teachers' AND d.source_id = g.teacher_id
UNION
-- What the as-of time decides of a mark is on record, so that a moved as-of time (every sync
-- that is not given one) reads the records, not every mark of the mirror (3.2 million at scale
-- 1, 0.24 s): a mark with no time of its own takes the as-of time (a repair of its created_at)...
SELECT p.source_id FROM migration.repairs p
WHERE (SELECT migration.as_of_moved()) AND p.source_table = 'grades'
  AND p.column_name = 'created_at' AND p.rule = 'missing: filled with the as-of time'
UNION
-- ... and one dated after it is set aside: moved forward, those that may now be kept are set
-- aside for that reason...
SELECT r.source_id FROM migration.rejected_rows r
WHERE (SELECT migration.as_of_moved()) AND r.source_table = 'grades'
  AND r.reason = 'lesson_date in the future'
UNION
-- ... moved back (or from no as-of time on record), the kept ones it now puts in the future are
-- found by their date.
SELECT g.id FROM stage.grades g
WHERE (SELECT migration.previous_as_of() IS NULL OR migration.as_of() < migration.previous_as_of())
  AND g.lesson_date > (SELECT migration.as_of_date())
-- In id order: scoped_grades then reads the mirror's rows of the scope through its id index in
-- the order of both, page after page, not at random (the day's sync at scale 1, 36,000 marks:
-- 0.14 s against 0.20-0.23 s).
ORDER BY 1;

-- name: analyze_scope
ANALYZE scope_course_students;

-- name: analyze_grade_scope
ANALYZE scope_grades;

-- name: clear_enrollments_in_scope
DELETE FROM course_enrollments e
USING migration.crosswalk_course_students x, scope_course_students s
WHERE x.source_id = s.id AND e.id = x.target_id;

-- name: clear_enrollment_records_in_scope
WITH crosswalk AS (
    DELETE FROM migration.crosswalk_course_students x USING scope_course_students s
    WHERE x.source_id = s.id RETURNING 1
), rejected AS (
    DELETE FROM migration.rejected_rows r USING scope_course_students s
    WHERE r.source_table = 'course_students' AND r.source_id = s.id RETURNING 1
), repaired AS (
    DELETE FROM migration.repairs r USING scope_course_students s
    WHERE r.source_table = 'course_students' AND r.source_id = s.id RETURNING 1
)
SELECT (SELECT count(*) FROM crosswalk) + (SELECT count(*) FROM rejected)
     + (SELECT count(*) FROM repaired);

-- name: scope_keys_grades
-- The grade ids of the marks in scope: a mark's id is derived from its legacy id alone
-- (parse_grades, phase5_marks.sql), so the grades are found by that id through grades_pkey,
-- without a look-up of each mark in a crosswalk first. Phase 5 then writes the marks in scope
-- into a temporary twin of grades, and only the rows that came out differently reach grades
-- (derived_apply.sql, in place: a mark whose score changed is updated, not deleted and
-- inserted again with an entry in each of its five indexes and three foreign-key checks).
-- In the order of grades_pkey: the statements that look each key up (assessments_left_by_marks,
-- the apply's drop_gone_in_place) then walk the index forward, not at random (at scale 10,
-- 320,000 look-ups of grades_pkey took 1.1 s in its order and 2.6 s in a random one, the cache
-- warm; assessments_left_by_marks in the day's sync at scale 1, 0.15-0.18 s against 0.23-0.28 s).
CREATE TEMP TABLE scope_keys_grades ON COMMIT DROP AS
SELECT migration.derive_id('grades', s.id::text) AS id FROM scope_grades s ORDER BY 1;

-- name: analyze_scope_keys_grades
ANALYZE scope_keys_grades;

-- name: assessments_left_by_marks
-- Run by phases/sync.py once phase 5 has derived the marks in scope into the twin, before they
-- reach grades: the assessments that marks in scope leave (their grade gone, set aside, or moved
-- to another assessment) may lose their last mark; drop_assessments_without_marks (phase5.sql)
-- checks them. One probe of grades_pkey per mark in scope; a mark that was set aside has no
-- grade and finds none.
INSERT INTO touched_assessments (id)
SELECT DISTINCT g.assessment_id
FROM scope_keys_grades k
JOIN public.grades g ON g.id = k.id
LEFT JOIN pg_temp.grades s ON s.id = k.id
WHERE s.id IS NULL OR s.assessment_id <> g.assessment_id;

-- name: clear_grade_records_in_scope
-- The marks' crosswalk is derived from grades.legacy_id (schema V026) and follows the grades
-- written: what is cleared here are the marks set aside and the repairs.
WITH rejected AS (
    DELETE FROM migration.rejected_rows r USING scope_grades s
    WHERE r.source_table = 'grades' AND r.source_id = s.id RETURNING 1
), repaired AS (
    DELETE FROM migration.repairs r USING scope_grades s
    WHERE r.source_table = 'grades' AND r.source_id = s.id RETURNING 1
)
SELECT (SELECT count(*) FROM rejected) + (SELECT count(*) FROM repaired);
