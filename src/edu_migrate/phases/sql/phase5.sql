-- Phase 5: enrollments, assessments and marks. Needs phase 4 (offerings) and phase 2 (students).
-- The rules run over the legacy rows in scope: scoped_course_students and scoped_grades are every
-- staged row in a full run, and the rows a catch-up derives again in a sync (phases/sync.py);
-- stage.course_students is read whole where a mark looks up its enrollment.
-- Rules (docs/dirty-data.md lists them all): the same student enrolled twice in one run is
-- merged into one enrollment (the completed one with a final score in 0–100 wins, then the
-- oldest), the crosswalk maps both legacy ids to it and the merge is recorded; an enrollment
-- whose student or run is missing or set aside is set aside with that reason, as is one whose
-- status is not enrolled/completed/failed/dropped; a final score outside 0–100 and a letter
-- outside A–F are dropped (the letter replaced by the final score's) and recorded. An
-- assessment is one (offering, grade_type). A mark 'q/b' (qayıb) is an absence; digits of any
-- script are digits (recorded); a mark that is blank, not a plain decimal ('1e1', '5+'),
-- negative, above its type's maximum, of an unknown grade_type, dated after the as-of day, or
-- whose enrollment is missing or set aside, is set aside with that reason; a mark whose teacher
-- is missing keeps no grader, recorded. A missing timestamp is the as-of time, recorded.

-- name: found_enrollments
-- say: Found {n} course enrollments to migrate
SELECT count(*) FROM scoped_course_students;

-- name: prepare_enrollments
CREATE TEMP TABLE prep_enrollments ON COMMIT DROP AS
SELECT s.id AS source_id,
       s.course_id AS run_source_id,
       xs.target_id AS student_id,
       xc.target_id AS offering_id,
       CASE lower(migration.clean_text(s.status))
            WHEN 'enrolled' THEN 'enrolled' WHEN 'completed' THEN 'completed'
            WHEN 'failed' THEN 'failed' WHEN 'dropped' THEN 'dropped' END AS status,
       s.final_score,
       upper(migration.clean_text(s.letter)) AS letter,
       s.enrolled_at,
       to_jsonb(s) AS legacy_row,
       CASE WHEN xs.target_id IS NULL AND EXISTS (
                SELECT 1 FROM migration.rejected_rows r
                WHERE r.source_table = 'students' AND r.source_id = s.student_id)
                THEN 'student set aside'
            WHEN xs.target_id IS NULL THEN 'student missing'
            WHEN xc.target_id IS NULL AND EXISTS (
                SELECT 1 FROM migration.rejected_rows r
                WHERE r.source_table = 'courses' AND r.source_id = s.course_id)
                THEN 'course run set aside'
            WHEN xc.target_id IS NULL THEN 'course run missing'
            WHEN lower(migration.clean_text(s.status))
                 NOT IN ('enrolled', 'completed', 'failed', 'dropped')
              OR s.status IS NULL THEN 'unrecognised value: status'
       END AS reject_reason
FROM scoped_course_students s
LEFT JOIN migration.crosswalk_students xs ON xs.source_id = s.student_id
LEFT JOIN migration.crosswalk_courses xc
       ON xc.source_id = s.course_id AND xc.target_table = 'course_offerings';

-- name: reject_enrollments
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'course_students', source_id, reject_reason, legacy_row, 5
FROM prep_enrollments WHERE reject_reason IS NOT NULL;

-- name: merge_duplicate_enrollments
CREATE TEMP TABLE final_enrollments ON COMMIT DROP AS
SELECT e.*,
       first_value(e.source_id) OVER same_run AS survivor_source_id,
       migration.derive_id('course_enrollments', (first_value(e.source_id) OVER same_run)::text)
           AS id,
       -- the legacy letter, else the letter of the final score (legacy-edu.md's scale)
       CASE WHEN e.letter IN ('A', 'B', 'C', 'D', 'E', 'F') THEN e.letter
            WHEN e.final_score BETWEEN 0 AND 100 THEN CASE
                WHEN e.final_score >= 91 THEN 'A' WHEN e.final_score >= 81 THEN 'B'
                WHEN e.final_score >= 71 THEN 'C' WHEN e.final_score >= 61 THEN 'D'
                WHEN e.final_score >= 51 THEN 'E' ELSE 'F' END
       END AS grade
FROM prep_enrollments e
WHERE e.reject_reason IS NULL
-- a final score that is dropped (outside 0–100) is no final score
WINDOW same_run AS (PARTITION BY e.student_id, e.offering_id
                    ORDER BY e.status = 'completed' DESC,
                             (e.final_score BETWEEN 0 AND 100) IS TRUE DESC, e.source_id);

-- name: migrate_enrollments
-- say: ✓ Migrated {n} enrollments successfully
INSERT INTO course_enrollments (id, student_id, course_offering_id, enrollment_status,
                                final_score, grade, enrolled_at)
SELECT id, student_id, offering_id, status,
       CASE WHEN final_score BETWEEN 0 AND 100 THEN final_score END, grade,
       coalesce(migration.baku_time(enrolled_at), migration.as_of())
FROM final_enrollments WHERE source_id = survivor_source_id;

-- name: record_enrollment_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'course_students', source_id, 'id', source_id::text, survivor_source_id::text,
       'same student enrolled twice in one run: merged', 5
FROM final_enrollments WHERE source_id <> survivor_source_id
UNION ALL
SELECT 'course_students', source_id, 'final_score', final_score::text, NULL,
       'outside 0–100: dropped', 5
FROM final_enrollments WHERE final_score NOT BETWEEN 0 AND 100
UNION ALL
SELECT 'course_students', source_id, 'letter', legacy_row ->> 'letter', grade,
       CASE WHEN letter IN ('A', 'B', 'C', 'D', 'E', 'F') THEN 'trimmed and upper-cased'
            WHEN letter IS NULL AND grade IS NOT NULL
                THEN 'blank: replaced by the letter of the final score'
            WHEN letter IS NULL THEN 'blank: stored as none'
            WHEN grade IS NOT NULL
                THEN 'not a letter A–F: replaced by the letter of the final score'
            ELSE 'not a letter A–F: dropped' END, 5
FROM final_enrollments
WHERE source_id = survivor_source_id AND legacy_row ->> 'letter' IS DISTINCT FROM grade
  AND legacy_row ->> 'letter' IS NOT NULL
UNION ALL
SELECT 'course_students', source_id, 'enrolled_at', NULL,
       (migration.as_of() AT TIME ZONE 'Asia/Baku')::text, 'missing: filled with the as-of time', 5
FROM final_enrollments WHERE source_id = survivor_source_id AND enrolled_at IS NULL;

-- name: crosswalk_enrollments
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_course_students (source_table, source_id, target_table, target_id)
SELECT 'course_students', source_id, 'course_enrollments', id FROM final_enrollments;

-- name: found_grades
-- say: \nFound {n} grades to migrate
SELECT count(*) FROM scoped_grades;

-- name: analyze_enrollment_crosswalk
-- Written above in this transaction: the planner needs its size to join 3 million marks to it.
ANALYZE migration.crosswalk_course_students;

-- name: assessment_keys
-- The id of every assessment a mark in scope can name, derived once per (course run, mark type)
-- rather than once per mark; the types are those of the max_score CASE in parse_grades.
-- scoped_mark_runs: the runs of the marks in scope, or every run (runner.define_scope).
CREATE TEMP TABLE assessment_keys ON COMMIT DROP AS
SELECT r.course_id AS run_source_id, t.grade_type,
       migration.derive_id('assessments', r.course_id || '/' || t.grade_type) AS id
FROM scoped_mark_runs r
CROSS JOIN generate_series(1, 6) AS t (grade_type);

-- name: analyze_assessment_keys
ANALYZE assessment_keys;

-- name: decided_marks
-- Each mark's target row and reject reason, stated once: stage.parsed_grades holds what the mark
-- alone decides (phase5_marks.sql, computed over the same scoped_grades before this statement,
-- phases/marks.py); this adds what other rows decide: its enrollment, its teacher, its
-- assessment. A view, not a table: each mark is written once, into grades, and the statements
-- below read the view in one pass each (migrate_grades every mark, flag_marks the few that
-- need a record).
CREATE OR REPLACE TEMP VIEW decided_marks AS
SELECT m.source_id, xe.target_id AS enrollment_id, m.grade_type, m.score, m.is_absent,
       m.lesson_date, xt.target_id AS graded_by, m.teacher_source_id, m.created_at_missing,
       m.has_foreign_digits, m.id, ak.id AS assessment_id, m.created_at,
       CASE WHEN e.id IS NULL THEN 'enrollment missing'
            WHEN xe.target_id IS NULL THEN 'enrollment set aside'
            ELSE m.mark_reject_reason
       END AS reject_reason
FROM stage.parsed_grades m
LEFT JOIN (stage.course_students e
           LEFT JOIN migration.crosswalk_course_students xe ON xe.source_id = e.id)
       ON e.id = m.course_student_id
LEFT JOIN migration.crosswalk_teachers xt ON xt.source_id = m.teacher_source_id
LEFT JOIN assessment_keys ak ON ak.run_source_id = e.course_id AND ak.grade_type = m.grade_type;

-- name: flag_marks
-- The marks that leave a record, found in one pass: set aside (with the reason), read from
-- digits of another script, kept without their teacher, or given a created_at. Every record of
-- a mark below is read from here, so that a rule that finds nothing scans a few rows, not every
-- mark.
CREATE TEMP TABLE flag_marks ON COMMIT DROP AS
SELECT d.source_id, d.reject_reason, d.score, d.is_absent, d.lesson_date, d.created_at,
       d.created_at_missing, d.has_foreign_digits, d.teacher_source_id,
       d.graded_by IS NULL AND d.teacher_source_id IS NOT NULL AS teacher_missing,
       NULL::jsonb AS legacy_row
FROM decided_marks d
WHERE d.reject_reason IS NOT NULL OR d.has_foreign_digits OR d.created_at_missing
   OR (d.graded_by IS NULL AND d.teacher_source_id IS NOT NULL);

-- name: analyze_flag_marks
ANALYZE flag_marks;

-- name: flag_marks_legacy_rows
-- The legacy row of each flagged mark (the detail of a rejection, the old value of a repair),
-- joined once the planner knows how few they are: in the pass above it joined every mark to its
-- legacy row first. With no mark flagged, the legacy rows are not read at all (an empty hash).
UPDATE flag_marks f SET legacy_row = to_jsonb(g)
FROM scoped_grades g WHERE g.id = f.source_id;

-- name: reject_grades
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'grades', source_id, reject_reason, legacy_row, 5
FROM flag_marks WHERE reject_reason IS NOT NULL;

-- name: record_mark_repairs
-- Marks written with digits of another script ('٨', '８,５'): read as digits, recorded.
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'grades', source_id, 'value', legacy_row ->> 'value', score::text,
       'digits of another script read as digits', 5
FROM flag_marks
WHERE reject_reason IS NULL AND has_foreign_digits AND NOT is_absent;

-- name: record_mark_defaults
-- A mark whose teacher is missing or set aside keeps no grader; a missing created_at is the
-- lesson's day, else the as-of time. Recorded.
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'grades', source_id, 'teacher_id', teacher_source_id::text, NULL,
       'teacher missing or set aside: mark kept without grader', 5
FROM flag_marks WHERE reject_reason IS NULL AND teacher_missing
UNION ALL
SELECT 'grades', source_id, 'created_at', NULL, (created_at AT TIME ZONE 'Asia/Baku')::text,
       CASE WHEN lesson_date IS NOT NULL THEN 'missing: taken from lesson_date'
            ELSE 'missing: filled with the as-of time' END, 5
FROM flag_marks WHERE reject_reason IS NULL AND created_at_missing;

-- name: migrate_grades
-- The mark's legacy id is written on its row: the marks' crosswalk is derived from it
-- (migration.crosswalk_grades, schema V026), not written beside it.
-- say: ✓ Migrated {n} grades successfully
INSERT INTO grades (id, enrollment_id, assessment_id, score, is_absent, graded_on, graded_by,
                    created_at, legacy_id)
SELECT id, enrollment_id, assessment_id, CASE WHEN NOT is_absent THEN score END, is_absent,
       lesson_date, graded_by, created_at, source_id
FROM decided_marks WHERE reject_reason IS NULL;

-- name: drop_decided_marks
DROP VIEW decided_marks;

-- name: drop_parsed_grades
DROP TABLE stage.parsed_grades;

-- name: migrate_assessments
-- after: indexes
-- An assessment exists while it has a mark: the assessments the marks name, found through the
-- index on grades.assessment_id (one probe per course run and mark type, not a pass over the
-- marks), before the foreign key to them is built again; a sync finds some already there, and
-- drop_assessments_without_marks removes the ones left empty.
-- say: ✓ Created {n} assessments (one per offering and mark type)
INSERT INTO assessments (id, course_offering_id, assessment_type, title, max_score)
SELECT ak.id, migration.derive_id('course_offerings', ak.run_source_id::text),
       t.assessment_type, t.title, t.max_score
FROM assessment_keys ak
JOIN (VALUES
    (1, 'attendance', 1, '{"az": "Davamiyyət", "ru": "Посещаемость", "en": "Attendance"}'::jsonb),
    (2, 'seminar', 10, '{"az": "Seminar", "ru": "Семинар", "en": "Seminar"}'),
    (3, 'colloquium', 10, '{"az": "Kollokvium", "ru": "Коллоквиум", "en": "Colloquium"}'),
    (4, 'independent_work', 10,
        '{"az": "Sərbəst iş", "ru": "Самостоятельная работа", "en": "Independent work"}'),
    (5, 'midterm', 20, '{"az": "Aralıq imtahanı", "ru": "Промежуточный экзамен", "en": "Midterm"}'),
    (6, 'final_exam', 50, '{"az": "Yekun imtahan", "ru": "Итоговый экзамен", "en": "Final exam"}')
) t (grade_type, assessment_type, max_score, title) ON t.grade_type = ak.grade_type
-- those already there first: a sync finds nearly all of them (36,000 probes of the small
-- assessments key instead of as many of the marks' index, 0.1 s against 1.0–1.4 s at scale 1)
WHERE NOT EXISTS (SELECT 1 FROM assessments a WHERE a.id = ak.id)
  AND EXISTS (SELECT 1 FROM grades g WHERE g.assessment_id = ak.id)
ON CONFLICT (id) DO NOTHING;

-- name: drop_assessments_without_marks
-- after: indexes
-- touched_assessments: those whose marks this run removed (none in a full run, which starts empty).
DELETE FROM assessments a USING touched_assessments t
WHERE a.id = t.id AND NOT EXISTS (SELECT 1 FROM grades g WHERE g.assessment_id = a.id);
