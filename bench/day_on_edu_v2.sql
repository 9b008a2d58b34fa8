-- A day of the applications on edu_v2 after the cutover, before a fallback: the writes that
-- `fallback` must carry back to edu. The same shape and size as day_of_changes.sql (the old
-- LMS's day), made here as an administrator's SQL on edu_v2 (every write reaches the audit log,
-- as the applications' do). Deterministic: rows are chosen by their legacy ids (the crosswalk),
-- and scaled by the data. The applications write with the real clock, so times are now(). At
-- scale 1, about (other rows than day_of_changes.sql's, so that every write changes a value):
--   marks: 15,000 new, 15,000 changed (re-marked), 1,600 deleted;
--   enrollments: 300 changed (final score and letter), 60 withdrawn;
--   users: 1,400 signed in (last_login_at), 35 new, each with a person, a student and an
--          enrollment; 20 passwords set by an administrator (a reset on edu follows);
--   persons: 70 changed (phone and address).

-- New marks: seven on the first assessment of the offering, for one enrollment in fifty.
INSERT INTO grades (enrollment_id, assessment_id, score, is_absent, graded_on, graded_by, created_at)
SELECT e.id, a.id, least(a.max_score, (c.source_id + n) % 11), false, current_date,
       o.instructor_id, now()
FROM migration.crosswalk c
JOIN course_enrollments e ON e.id = c.target_id
JOIN course_offerings o ON o.id = e.course_offering_id
CROSS JOIN LATERAL (SELECT id, max_score FROM assessments
                    WHERE course_offering_id = o.id ORDER BY id LIMIT 1) a
CROSS JOIN generate_series(1, 7) AS n
WHERE c.source_table = 'course_students' AND c.source_id % 50 = 11;

-- Marks re-entered with another value: one in 211.
UPDATE grades g
SET score = round(a.max_score * ((c.source_id % 10) / 10.0), 2), is_absent = false
FROM migration.crosswalk c, assessments a
WHERE c.source_table = 'grades' AND c.source_id % 211 = 19 AND g.id = c.target_id
  AND a.id = g.assessment_id;

-- Marks entered by mistake and removed: one in 1,999.
DELETE FROM grades g USING migration.crosswalk c
WHERE c.source_table = 'grades' AND c.source_id % 1999 = 5 AND g.id = c.target_id;

-- Final scores revised: one enrollment in 397.
UPDATE course_enrollments e
SET final_score = least(100, coalesce(e.final_score, 60) + 3),
    grade = CASE WHEN least(100, coalesce(e.final_score, 60) + 3) > 90 THEN 'A'
                 WHEN least(100, coalesce(e.final_score, 60) + 3) > 80 THEN 'B'
                 WHEN least(100, coalesce(e.final_score, 60) + 3) > 70 THEN 'C'
                 WHEN least(100, coalesce(e.final_score, 60) + 3) > 60 THEN 'D'
                 WHEN least(100, coalesce(e.final_score, 60) + 3) > 50 THEN 'E' ELSE 'F' END
FROM migration.crosswalk c
WHERE c.source_table = 'course_students' AND c.source_id % 397 = 12 AND e.id = c.target_id;

-- Enrollments withdrawn: one in 1,997.
UPDATE course_enrollments e SET enrollment_status = 'dropped'
FROM migration.crosswalk c
WHERE c.source_table = 'course_students' AND c.source_id % 1997 = 14 AND e.id = c.target_id;

-- Sign-ins: one account in five.
UPDATE users u SET last_login_at = now()
FROM migration.crosswalk c
WHERE c.source_table = 'users' AND c.source_id % 5 = 3 AND u.id = c.target_id;

-- Passwords set by an administrator: one account in 350 (an argon2 hash edu cannot verify).
UPDATE users u
SET password_hash = '$argon2id$v=19$m=65536,t=3,p=4$' || md5('salt ' || c.source_id) || '$'
                    || md5('hash ' || c.source_id),
    password_algo = 'argon2', updated_at = now()
FROM migration.crosswalk c
WHERE c.source_table = 'users' AND c.source_id % 350 = 9 AND u.id = c.target_id;

-- Contact details changed: one person in 101.
UPDATE persons p
SET phone = '+99450' || lpad((c.source_id % 1000)::text, 3, '0')
            || lpad((c.source_id % 97)::text, 2, '0') || lpad((c.source_id % 89)::text, 2, '0'),
    address = 'Bakı, Nəsimi r-nu, ' || (c.source_id % 200)::text || ' küç.'
FROM migration.crosswalk c
WHERE c.source_table = 'persons' AND c.source_id % 101 = 5 AND p.id = c.target_id;

-- New students: one in 200 student accounts is the template of a new account, person, student
-- and an enrollment in one of the template's offerings.
CREATE TEMP TABLE new_students ON COMMIT DROP AS
SELECT s.id AS template, row_number() OVER (ORDER BY c.source_id) AS n
FROM migration.crosswalk c
JOIN students s ON s.id = c.target_id
WHERE c.source_table = 'students' AND c.source_id % 200 = 7;

ALTER TABLE new_students ADD COLUMN user_id uuid, ADD COLUMN person_id uuid,
    ADD COLUMN student_id uuid;

UPDATE new_students SET user_id = new_row_id('users'), person_id = new_row_id('persons'),
    student_id = new_row_id('students');

INSERT INTO users (id, username, email, password_hash, password_algo, role, is_active,
                   created_at, updated_at)
SELECT n.user_id, 'new.v2.' || n.n, 'new.v2.' || n.n || '@student.edu.az', u.password_hash,
       u.password_algo, 'student', true, now(), now()
FROM new_students n JOIN students s ON s.id = n.template JOIN users u ON u.id = s.user_id;

INSERT INTO persons (id, user_id, first_name, last_name, patronymic, birth_date, gender,
                     created_at)
SELECT n.person_id, n.user_id, p.first_name, p.last_name, p.patronymic, date '2007-09-01',
       p.gender, now()
FROM new_students n JOIN students s ON s.id = n.template JOIN persons p ON p.id = s.person_id;

INSERT INTO students (id, user_id, person_id, program_id, student_number, admission_year,
                      status, group_name, education_form, created_at)
SELECT n.student_id, n.user_id, n.person_id, s.program_id, 'V2' || lpad(n.n::text, 6, '0'),
       2026, 'active', s.group_name, s.education_form, now()
FROM new_students n JOIN students s ON s.id = n.template;

INSERT INTO course_enrollments (student_id, course_offering_id, enrollment_status, enrolled_at)
SELECT DISTINCT ON (n.student_id) n.student_id, e.course_offering_id, 'enrolled', now()
FROM new_students n JOIN course_enrollments e ON e.student_id = n.template
ORDER BY n.student_id, e.course_offering_id;
