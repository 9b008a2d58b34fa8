-- Phase 2: students and staff (teachers). Needs phase 1 (users, persons) and phase 3 (their
-- programs and departments).
-- Rules (docs/dirty-data.md lists them all): a student or teacher whose user is missing or set
-- aside is set aside with that reason; a person_id that points at nothing is repaired to the
-- person of the same user (recorded), and when there is none the row is set aside ('person
-- missing' / 'person set aside'); a student's unit must be a program ('program missing',
-- 'program set aside', 'org_id is a department, not a program'), a teacher's a department, a
-- faculty or the university ('department missing' / 'department set aside'); status and
-- position words in English or Azerbaijani, any case (AKTİV is aktiv), anything else set aside
-- as 'unrecognised value: status'; gpa on the 100-point scale with a point or a comma, digits
-- of any script; not a number or outside 0–100 is dropped and recorded; a hire date in the
-- future is dropped and recorded; a duplicate student number gets '-<legacy id>', recorded.

-- name: found_students
-- say: Found {n} students to migrate
SELECT count(*) FROM stage.students;

-- name: person_of_user
-- From what phase 1 migrated, not from its stage tables: those are UNLOGGED, and a server crash
-- between the phases empties them.
CREATE TEMP TABLE person_of_user ON COMMIT DROP AS
SELECT xu.source_id AS user_source_id, p.id AS person_id
FROM persons p
JOIN migration.crosswalk_users xu ON xu.target_id = p.user_id;

-- name: prepare_students
CREATE TEMP TABLE prep_students ON COMMIT DROP AS
WITH parsed AS (
    SELECT s.id AS source_id,
           migration.derive_id('students', s.id::text) AS id,
           xu.target_id AS user_id,
           coalesce(xp.target_id, pu.person_id) AS person_id,
           xp.target_id IS NULL AND pu.person_id IS NOT NULL AS person_repaired,
           xo.target_id AS program_id,
           ou.type AS unit_type,
           migration.clean_text(s.student_no) AS student_number,
           s.admission_year,
           CASE migration.fold_word(s.status)
                WHEN 'active' THEN 'active' WHEN 'aktiv' THEN 'active'
                WHEN 'graduated' THEN 'graduated' WHEN 'məzun' THEN 'graduated'
                WHEN 'expelled' THEN 'expelled' WHEN 'xaric edilib' THEN 'expelled'
                WHEN 'academic leave' THEN 'academic_leave'
                WHEN 'akademik məzuniyyət' THEN 'academic_leave'
           END AS status,
           migration.parse_decimal(s.gpa) AS gpa,
           migration.clean_text(s.group_name) AS group_name,
           CASE migration.fold_word(s.education_form)
                WHEN 'əyani' THEN 'full_time' WHEN 'qiyabi' THEN 'part_time'
                WHEN 'full time' THEN 'full_time' WHEN 'part time' THEN 'part_time'
           END AS education_form,
           s.created_at,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'users' AND r.source_id = s.user_id) AS user_set_aside,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'organizations' AND r.source_id = s.org_id) AS unit_set_aside,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'persons' AND r.source_id = s.person_id) AS person_set_aside,
           to_jsonb(s) AS legacy_row
    FROM stage.students s
    LEFT JOIN migration.crosswalk_users xu ON xu.source_id = s.user_id
    LEFT JOIN migration.crosswalk_persons xp ON xp.source_id = s.person_id
    LEFT JOIN person_of_user pu ON pu.user_source_id = s.user_id
    LEFT JOIN migration.crosswalk_organizations xo ON xo.source_id = s.org_id
    LEFT JOIN organization_units ou ON ou.id = xo.target_id
)
SELECT p.*,
       CASE WHEN p.user_id IS NULL AND p.user_set_aside THEN 'user set aside'
            WHEN p.user_id IS NULL THEN 'user missing'
            WHEN p.person_id IS NULL AND p.person_set_aside THEN 'person set aside'
            WHEN p.person_id IS NULL THEN 'person missing'
            WHEN p.program_id IS NULL AND p.unit_set_aside THEN 'program set aside'
            WHEN p.program_id IS NULL THEN 'program missing'
            WHEN p.unit_type <> 'program' THEN 'org_id is a ' || p.unit_type || ', not a program'
            WHEN p.status IS NULL THEN 'unrecognised value: status'
            WHEN p.student_number IS NULL THEN 'blank student number'
       END AS reject_reason
FROM parsed p;

-- name: second_student_of_user
UPDATE prep_students s SET reject_reason = 'second student record for the same user'
WHERE s.reject_reason IS NULL AND EXISTS (
    SELECT 1 FROM prep_students o
    WHERE o.user_id = s.user_id AND o.reject_reason IS NULL AND o.source_id < s.source_id);

-- name: reject_students
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'students', source_id, reject_reason, legacy_row, 2
FROM prep_students WHERE reject_reason IS NOT NULL;

-- name: final_students
CREATE TEMP TABLE final_students ON COMMIT DROP AS
SELECT s.*,
       CASE WHEN row_number() OVER (PARTITION BY upper(s.student_number) ORDER BY s.source_id) = 1
            THEN s.student_number ELSE s.student_number || '-' || s.source_id
       END AS final_number
FROM prep_students s WHERE s.reject_reason IS NULL;

-- name: settle_student_number_collisions
-- A renamed number can still meet a real one ('123-7' written by hand): suffix again until unique.
DO $$
BEGIN
    LOOP
        UPDATE final_students f SET final_number = f.final_number || '-' || f.source_id
        FROM (SELECT source_id, row_number() OVER (PARTITION BY final_number
                  ORDER BY final_number = student_number DESC, source_id) AS n
              FROM final_students) d
        WHERE d.source_id = f.source_id AND d.n > 1;
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;

-- name: record_student_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'students', source_id, 'gpa', legacy_row ->> 'gpa', NULL,
       CASE WHEN gpa IS NULL THEN 'not a number: dropped' ELSE 'outside 0–100: dropped' END, 2
FROM final_students
WHERE migration.clean_text(legacy_row ->> 'gpa') IS NOT NULL
  AND (gpa IS NULL OR gpa NOT BETWEEN 0 AND 100)
UNION ALL
SELECT 'students', source_id, 'student_no', legacy_row ->> 'student_no', final_number,
       CASE WHEN final_number <> student_number THEN 'number used by an older student: renamed'
            ELSE 'white space trimmed' END, 2
FROM final_students WHERE final_number <> legacy_row ->> 'student_no'
UNION ALL
SELECT 'students', source_id, 'person_id', legacy_row ->> 'person_id', person_id::text,
       CASE WHEN person_set_aside THEN 'person set aside: replaced by the person of the same user'
            ELSE 'person missing: replaced by the person of the same user' END, 2
FROM final_students WHERE person_repaired
UNION ALL
SELECT 'students', source_id, 'gpa', legacy_row ->> 'gpa', gpa::text,
       'digits of another script read as digits', 2
FROM final_students
WHERE gpa BETWEEN 0 AND 100 AND migration.has_foreign_digits(legacy_row ->> 'gpa')
UNION ALL
SELECT 'students', source_id, 'admission_year', legacy_row ->> 'admission_year', NULL,
       'outside 1950–2100: dropped', 2
FROM final_students WHERE admission_year NOT BETWEEN 1950 AND 2100
UNION ALL
SELECT 'students', source_id, 'group_name', legacy_row ->> 'group_name', group_name,
       CASE WHEN group_name IS NULL THEN 'blank: stored as none' ELSE 'white space trimmed' END, 2
FROM final_students WHERE group_name IS DISTINCT FROM legacy_row ->> 'group_name'
UNION ALL
SELECT 'students', source_id, 'created_at', NULL,
       (migration.as_of() AT TIME ZONE 'Asia/Baku')::text, 'missing: filled with the as-of time', 2
FROM final_students WHERE created_at IS NULL
UNION ALL
SELECT 'students', source_id, 'education_form', legacy_row ->> 'education_form', NULL,
       'unrecognised value: dropped', 2
FROM final_students
WHERE education_form IS NULL AND migration.clean_text(legacy_row ->> 'education_form') IS NOT NULL;

-- name: migrate_students
-- say: ✓ Migrated {n} students successfully
INSERT INTO students (id, user_id, person_id, program_id, student_number, admission_year, status,
                      gpa, group_name, education_form, created_at)
SELECT id, user_id, person_id, program_id, final_number,
       CASE WHEN admission_year BETWEEN 1950 AND 2100 THEN admission_year END,
       status, CASE WHEN gpa BETWEEN 0 AND 100 THEN gpa END, group_name,
       education_form, coalesce(migration.baku_time(created_at), migration.as_of())
FROM final_students;

-- name: crosswalk_students
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_students (source_table, source_id, target_table, target_id)
SELECT 'students', source_id, 'students', id FROM final_students;

-- name: staff_header
-- say: \nMIGRATING STAFF (TEACHERS)...
SELECT 0;

-- name: found_teachers
-- say: Found {n} teachers to migrate
SELECT count(*) FROM stage.teachers;

-- name: prepare_teachers
CREATE TEMP TABLE prep_teachers ON COMMIT DROP AS
WITH positions (word, position, rank, az, ru, en) AS (VALUES
    ('professor', 'professor', 1, 'Professor', 'Профессор', 'Professor'),
    ('dosent', 'associate_professor', 2, 'Dosent', 'Доцент', 'Associate Professor'),
    ('baş müəllim', 'senior_lecturer', 3, 'Baş müəllim', 'Старший преподаватель', 'Senior Lecturer'),
    ('müəllim', 'lecturer', 4, 'Müəllim', 'Преподаватель', 'Lecturer'),
    ('assistent', 'assistant', 5, 'Assistent', 'Ассистент', 'Assistant')
), parsed AS (
    SELECT s.id AS source_id,
           migration.derive_id('staff_members', s.id::text) AS id,
           xu.target_id AS user_id,
           coalesce(xp.target_id, pu.person_id) AS person_id,
           xp.target_id IS NULL AND pu.person_id IS NOT NULL AS person_repaired,
           xo.target_id AS unit_id,
           ou.type AS unit_type,
           pos.position, pos.rank,
           jsonb_build_object('az', pos.az, 'ru', pos.ru, 'en', pos.en) AS position_title,
           migration.clean_text(s.degree) AS academic_degree,
           s.hire_date, s.is_active,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'users' AND r.source_id = s.user_id) AS user_set_aside,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'persons' AND r.source_id = s.person_id) AS person_set_aside,
           EXISTS (SELECT 1 FROM migration.rejected_rows r
                   WHERE r.source_table = 'organizations' AND r.source_id = s.org_id) AS unit_set_aside,
           to_jsonb(s) AS legacy_row
    FROM stage.teachers s
    LEFT JOIN migration.crosswalk_users xu ON xu.source_id = s.user_id
    LEFT JOIN migration.crosswalk_persons xp ON xp.source_id = s.person_id
    LEFT JOIN person_of_user pu ON pu.user_source_id = s.user_id
    LEFT JOIN migration.crosswalk_organizations xo ON xo.source_id = s.org_id
    LEFT JOIN organization_units ou ON ou.id = xo.target_id
    LEFT JOIN positions pos ON pos.word = migration.fold_word(s.position)
)
SELECT p.*,
       CASE WHEN p.user_id IS NULL AND p.user_set_aside THEN 'user set aside'
            WHEN p.user_id IS NULL THEN 'user missing'
            WHEN p.person_id IS NULL AND p.person_set_aside THEN 'person set aside'
            WHEN p.person_id IS NULL THEN 'person missing'
            WHEN p.unit_id IS NULL AND p.unit_set_aside THEN 'department set aside'
            WHEN p.unit_id IS NULL THEN 'department missing'
            WHEN p.unit_type = 'program' THEN 'org_id is a program, not a department'
            WHEN p.position IS NULL THEN 'unrecognised value: position'
       END AS reject_reason
FROM parsed p;

-- name: second_staff_of_user
UPDATE prep_teachers s SET reject_reason = 'second teacher record for the same user'
WHERE s.reject_reason IS NULL AND EXISTS (
    SELECT 1 FROM prep_teachers o
    WHERE o.user_id = s.user_id AND o.reject_reason IS NULL AND o.source_id < s.source_id);

-- name: reject_teachers
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'teachers', source_id, reject_reason, legacy_row, 2
FROM prep_teachers WHERE reject_reason IS NOT NULL;

-- name: record_teacher_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'teachers', source_id, 'hire_date', legacy_row ->> 'hire_date', NULL,
       'in the future: dropped', 2
FROM prep_teachers WHERE reject_reason IS NULL AND hire_date > migration.as_of_date()
UNION ALL
SELECT 'teachers', source_id, 'person_id', legacy_row ->> 'person_id', person_id::text,
       CASE WHEN person_set_aside THEN 'person set aside: replaced by the person of the same user'
            ELSE 'person missing: replaced by the person of the same user' END, 2
FROM prep_teachers WHERE reject_reason IS NULL AND person_repaired
UNION ALL
SELECT 'teachers', source_id, 'is_active', legacy_row ->> 'is_active', (is_active IS NULL)::text,
       CASE WHEN is_active IS NULL THEN 'blank: taken as active'
            ELSE 'not 0 or 1: taken as inactive' END, 2
FROM prep_teachers
WHERE reject_reason IS NULL AND (is_active IS NULL OR is_active NOT IN (0, 1))
UNION ALL
SELECT 'teachers', source_id, 'degree', legacy_row ->> 'degree', academic_degree,
       CASE WHEN academic_degree IS NULL THEN 'blank: stored as none'
            ELSE 'white space trimmed' END, 2
FROM prep_teachers
WHERE reject_reason IS NULL AND academic_degree IS DISTINCT FROM legacy_row ->> 'degree';

-- name: migrate_teachers
-- say: ✓ Migrated {n} staff members successfully
INSERT INTO staff_members (id, user_id, person_id, organization_unit_id, position, position_title,
                           position_rank, academic_degree, hire_date, is_active)
SELECT id, user_id, person_id, unit_id, position, position_title, rank, academic_degree,
       CASE WHEN hire_date <= migration.as_of_date() THEN hire_date END, coalesce(is_active, 1) = 1
FROM prep_teachers WHERE reject_reason IS NULL;

-- name: crosswalk_teachers
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_teachers (source_table, source_id, target_table, target_id)
SELECT 'teachers', source_id, 'staff_members', id FROM prep_teachers WHERE reject_reason IS NULL;
