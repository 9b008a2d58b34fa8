-- Phase 2's inverse: students and staff members back into legacy students and teachers rows
-- (see phase1_inverse.sql for the shape). Statuses, forms and positions go back into the
-- English or Azerbaijani words phase2.sql reads; units, users and persons into legacy ids.

-- name: invert_students
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'students', d.legacy_id,
       CASE WHEN s.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN s.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('user_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                     WHERE k.target_table = 'users'
                                       AND k.target_id = s.user_id LIMIT 1)),
                b.user_id IS DISTINCT FROM s.user_id),
               ('person_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                       WHERE k.target_table = 'persons'
                                         AND k.target_id = s.person_id LIMIT 1)),
                b.person_id IS DISTINCT FROM s.person_id),
               ('org_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                    WHERE k.target_table = 'organization_units'
                                      AND k.target_id = s.program_id LIMIT 1)),
                b.program_id IS DISTINCT FROM s.program_id),
               ('student_no', to_jsonb(s.student_number),
                b.student_number IS DISTINCT FROM s.student_number),
               ('admission_year', to_jsonb(s.admission_year),
                b.admission_year IS DISTINCT FROM s.admission_year),
               ('status', to_jsonb(replace(s.status, '_', ' ')), b.status IS DISTINCT FROM s.status),
               ('gpa', to_jsonb(s.gpa::text), b.gpa IS DISTINCT FROM s.gpa),
               ('group_name', to_jsonb(s.group_name), b.group_name IS DISTINCT FROM s.group_name),
               ('education_form', to_jsonb(replace(s.education_form, '_', ' ')),
                b.education_form IS DISTINCT FROM s.education_form),
               ('created_at', to_jsonb(s.created_at AT TIME ZONE 'Asia/Baku'),
                b.created_at IS DISTINCT FROM s.created_at)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN students s ON s.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::students, d.before) b ON true
WHERE d.table_name = 'students' AND d.legacy_id IS NOT NULL;

-- name: invert_staff_members
-- The position's title and rank follow from the position (phase2.sql); a title or rank changed
-- on its own is a value edu cannot hold (listed by list_losses).
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'teachers', d.legacy_id,
       CASE WHEN s.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN s.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('user_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                     WHERE k.target_table = 'users'
                                       AND k.target_id = s.user_id LIMIT 1)),
                b.user_id IS DISTINCT FROM s.user_id),
               ('person_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                       WHERE k.target_table = 'persons'
                                         AND k.target_id = s.person_id LIMIT 1)),
                b.person_id IS DISTINCT FROM s.person_id),
               ('org_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                    WHERE k.target_table = 'organization_units'
                                      AND k.target_id = s.organization_unit_id LIMIT 1)),
                b.organization_unit_id IS DISTINCT FROM s.organization_unit_id),
               ('position', to_jsonb(CASE s.position WHEN 'professor' THEN 'professor'
                    WHEN 'associate_professor' THEN 'dosent' WHEN 'senior_lecturer' THEN 'baş müəllim'
                    WHEN 'lecturer' THEN 'müəllim' WHEN 'assistant' THEN 'assistent' END),
                b.position IS DISTINCT FROM s.position),
               ('degree', to_jsonb(s.academic_degree),
                b.academic_degree IS DISTINCT FROM s.academic_degree),
               ('hire_date', to_jsonb(s.hire_date), b.hire_date IS DISTINCT FROM s.hire_date),
               ('is_active', to_jsonb(s.is_active::integer), b.is_active IS DISTINCT FROM s.is_active)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN staff_members s ON s.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::staff_members, d.before) b ON true
WHERE d.table_name = 'staff_members' AND d.legacy_id IS NOT NULL;
