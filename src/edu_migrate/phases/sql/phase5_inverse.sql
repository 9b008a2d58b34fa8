-- Phase 5's inverse: enrollments and marks back into legacy course_students and grades rows (see
-- phase1_inverse.sql for the shape). A merged enrollment writes its surviving legacy row
-- (migration.legacy_id); the rows merged into it are merged in edu too when it changes
-- (close_merged_enrollments). A score goes back into the text the forward parser reads as the same number, an
-- absence into 'q/b'; an assessment into its mark type (phase5.sql's six types).

-- name: invert_course_enrollments
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'course_students', d.legacy_id,
       CASE WHEN e.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN e.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('course_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                       WHERE k.target_table = 'course_offerings'
                                         AND k.target_id = e.course_offering_id LIMIT 1)),
                b.course_offering_id IS DISTINCT FROM e.course_offering_id),
               ('student_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                        WHERE k.target_table = 'students'
                                          AND k.target_id = e.student_id LIMIT 1)),
                b.student_id IS DISTINCT FROM e.student_id),
               ('status', to_jsonb(e.enrollment_status),
                b.enrollment_status IS DISTINCT FROM e.enrollment_status),
               ('final_score', to_jsonb(e.final_score), b.final_score IS DISTINCT FROM e.final_score),
               ('letter', to_jsonb(e.grade), b.grade IS DISTINCT FROM e.grade),
               ('enrolled_at', to_jsonb(e.enrolled_at AT TIME ZONE 'Asia/Baku'),
                b.enrolled_at IS DISTINCT FROM e.enrolled_at)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN course_enrollments e ON e.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::course_enrollments, d.before) b ON true
WHERE d.table_name = 'course_enrollments' AND d.legacy_id IS NOT NULL;

-- name: close_merged_enrollments
-- The same student enrolled twice in one run is one enrollment on edu_v2, whose survivor the
-- forward rule chooses by status and final score (phase5.sql). Once that enrollment changes or
-- is deleted, the rows merged into it could win the next forward run (a new id) or come back
-- alone: the merge is completed in edu. They are deleted, and their legacy marks (which edu_v2
-- holds as marks of the enrollment) name the surviving row.
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image,
                          closure)
SELECT d.table_name, d.row_id, 'course_students', x.source_id, 'delete', NULL, true
FROM reverse_delta d
JOIN migration.crosswalk_course_students x ON x.target_id = d.row_id
WHERE d.table_name = 'course_enrollments' AND NOT d.created AND x.source_id <> d.legacy_id
UNION ALL
SELECT d.table_name, d.row_id, 'grades', g.id, 'update',
       jsonb_build_object('course_student_id', d.legacy_id), true
FROM reverse_delta d
JOIN course_enrollments e ON e.id = d.row_id
JOIN migration.crosswalk_course_students x ON x.target_id = d.row_id
JOIN stage.grades g ON g.course_student_id = x.source_id
WHERE d.table_name = 'course_enrollments' AND NOT d.created AND x.source_id <> d.legacy_id;

-- name: invert_grades
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'grades', d.legacy_id,
       CASE WHEN g.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN g.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('course_student_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                               WHERE k.target_table = 'course_enrollments'
                                                 AND k.target_id = g.enrollment_id LIMIT 1)),
                b.enrollment_id IS DISTINCT FROM g.enrollment_id),
               ('grade_type', to_jsonb(CASE a.assessment_type WHEN 'attendance' THEN 1
                    WHEN 'seminar' THEN 2 WHEN 'colloquium' THEN 3 WHEN 'independent_work' THEN 4
                    WHEN 'midterm' THEN 5 WHEN 'final_exam' THEN 6 END),
                b.assessment_id IS DISTINCT FROM g.assessment_id),
               ('value', to_jsonb(CASE WHEN g.is_absent THEN 'q/b' ELSE trim_scale(g.score)::text END),
                b.score IS DISTINCT FROM g.score OR b.is_absent IS DISTINCT FROM g.is_absent),
               ('lesson_date', to_jsonb(g.graded_on), b.graded_on IS DISTINCT FROM g.graded_on),
               ('teacher_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                        WHERE k.target_table = 'staff_members'
                                          AND k.target_id = g.graded_by LIMIT 1)),
                b.graded_by IS DISTINCT FROM g.graded_by),
               ('created_at', to_jsonb(g.created_at AT TIME ZONE 'Asia/Baku'),
                b.created_at IS DISTINCT FROM g.created_at)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN grades g ON g.id = d.row_id
LEFT JOIN assessments a ON a.id = g.assessment_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::grades, d.before) b ON true
WHERE d.table_name = 'grades' AND d.legacy_id IS NOT NULL;

-- name: list_losses
-- What edu cannot hold, per edu_v2 row: written to edu as far as it goes, listed by the
-- fallback per table and column. Terms and assessments are derived in edu; a new catalogue
-- course or offering, a changed course code or term, a title or rank apart from its position,
-- an argon2 hash (set on edu_v2: the legacy application verifies MD5 and bcrypt only), and a
-- row created under an id of the application's own (a forward run derives another one).
INSERT INTO round_losses (target_table, target_id, column_name, reason)
SELECT d.table_name, d.row_id, '*', 'derived in edu from the course runs and mark types'
FROM reverse_delta d WHERE d.table_name IN ('academic_terms', 'assessments')
UNION ALL
SELECT d.table_name, d.row_id, '*', 'a new ' || replace(d.table_name, '_', ' ')
    || ' is not a legacy course run of its own'
FROM reverse_delta d
WHERE d.table_name IN ('courses', 'course_offerings') AND d.created
UNION ALL
SELECT d.table_name, d.row_id, v.column_name, v.reason
FROM reverse_delta d
JOIN courses c ON c.id = d.row_id
JOIN LATERAL jsonb_populate_record(NULL::courses, d.before) b ON true
CROSS JOIN LATERAL (VALUES ('code', 'the id of a catalogue course derives from its code',
                            b.code IS DISTINCT FROM c.code)) v (column_name, reason, changed)
WHERE d.table_name = 'courses' AND NOT d.created AND v.changed
UNION ALL
SELECT d.table_name, d.row_id, v.column_name, v.reason
FROM reverse_delta d
JOIN course_offerings o ON o.id = d.row_id
JOIN LATERAL jsonb_populate_record(NULL::course_offerings, d.before) b ON true
CROSS JOIN LATERAL (VALUES
    ('course_id', 'a run''s course is its code, names and credits', b.course_id IS DISTINCT FROM o.course_id),
    ('academic_term_id', 'a run''s term is its edu_year and semester',
     b.academic_term_id IS DISTINCT FROM o.academic_term_id)
) v (column_name, reason, changed)
WHERE d.table_name = 'course_offerings' AND NOT d.created AND v.changed
UNION ALL
SELECT d.table_name, d.row_id, v.column_name, 'follows from the position in edu'
FROM reverse_delta d
JOIN staff_members s ON s.id = d.row_id
JOIN LATERAL jsonb_populate_record(NULL::staff_members, d.before) b ON true
CROSS JOIN LATERAL (VALUES ('position_title', b.position_title IS DISTINCT FROM s.position_title
                                              AND b.position IS NOT DISTINCT FROM s.position),
                           ('position_rank', b.position_rank IS DISTINCT FROM s.position_rank
                                             AND b.position IS NOT DISTINCT FROM s.position))
    v (column_name, changed)
WHERE d.table_name = 'staff_members' AND NOT d.created AND v.changed
UNION ALL
SELECT 'users', u.id, 'password', 'an argon2 hash set on edu_v2: the legacy application cannot '
    || 'verify it, so the account needs a password reset on edu'
FROM reverse_delta d
JOIN users u ON u.id = d.row_id
WHERE d.table_name = 'users' AND u.password_algo = 'argon2'
  AND (d.created OR EXISTS (SELECT 1 FROM migration.password_changes p
                            WHERE p.user_id = u.id AND p.changed_at > migration.cutover_at()))
UNION ALL
SELECT d.table_name, d.row_id, 'id', 'created under an id of its own: a forward migration '
    || 'derives another id from its new legacy id'
FROM reverse_delta d WHERE d.created AND d.assigned_here;
