-- A realistic day of the old LMS, applied to the live copy of `edu` between a full migration and
-- a sync. Deterministic (rows are chosen by their ids, new ids follow the largest) and scaled by
-- the data (every choice is a fraction of the rows there are). At scale 1, about:
--   marks: 15,000 new (attendance and seminar marks for 1 in 50 enrollments), 15,000 values
--          changed (re-marked), 1,600 deleted: about 1 % of the 3.2 million new or changed;
--   enrollments: 300 changed (final score and letter), 170 new, 60 deleted with their marks;
--   users: 1,400 logged in (last_login), 35 new, each with a new person and student;
--   persons: 70 changed (phone and address).
-- The day is 19 December 2025, inside the generated data's last term.

-- New attendance and seminar marks: seven per enrollment for one enrollment in fifty.
INSERT INTO grades (id, course_student_id, grade_type, value, lesson_date, teacher_id, created_at)
SELECT (SELECT max(id) FROM grades) + row_number() OVER (ORDER BY e.id, n),
       e.id,
       CASE WHEN n <= 5 THEN 1 ELSE 2 END,
       CASE WHEN n <= 5 THEN CASE WHEN (e.id + n) % 6 = 0 THEN '0' ELSE '1' END
            WHEN (e.id + n) % 4 = 0 THEN ((e.id * 7 + n) % 10)::text || ',5'
            ELSE ((e.id * 7 + n) % 11)::text END,
       date '2025-12-19',
       c.teacher_id,
       timestamp '2025-12-19 09:00' + (e.id % 480) * interval '1 minute'
FROM course_students e
JOIN courses c ON c.id = e.course_id
CROSS JOIN generate_series(1, 7) AS n
WHERE e.id % 50 = 11;

-- Marks re-entered with another value: one in 211.
UPDATE grades
SET value = (id % (CASE grade_type WHEN 1 THEN 2 WHEN 5 THEN 21 WHEN 6 THEN 51 ELSE 11 END))::text
WHERE id % 211 = 17;

-- Marks entered by mistake and removed: one in 1,999.
DELETE FROM grades WHERE id % 1999 = 3;

-- Final scores revised: one enrollment in 397.
UPDATE course_students
SET final_score = least(100, coalesce(final_score, 60) + 3),
    letter = CASE WHEN least(100, coalesce(final_score, 60) + 3) > 90 THEN 'A'
                  WHEN least(100, coalesce(final_score, 60) + 3) > 80 THEN 'B'
                  WHEN least(100, coalesce(final_score, 60) + 3) > 70 THEN 'C'
                  WHEN least(100, coalesce(final_score, 60) + 3) > 60 THEN 'D'
                  WHEN least(100, coalesce(final_score, 60) + 3) > 50 THEN 'E' ELSE 'F' END
WHERE id % 397 = 11;

-- Late enrollments: one student in 37 joins a run of the last term (picked by its id), unless
-- already in it. One anti-join over the enrollments, whatever the scale.
INSERT INTO course_students (id, course_id, student_id, status, final_score, letter, enrolled_at)
WITH term_runs AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS runs
    FROM courses WHERE edu_year = '2025-2026' AND semester = 1
), picks AS (
    SELECT s.id AS student_id, r.id AS course_id
    FROM students s JOIN term_runs r ON r.n = 1 + (s.id * 7919) % r.runs
    WHERE s.id % 37 = 1
)
SELECT (SELECT max(id) FROM course_students) + row_number() OVER (ORDER BY p.student_id),
       p.course_id, p.student_id, 'enrolled', NULL, NULL,
       timestamp '2025-12-19 10:00' + p.student_id % 300 * interval '1 second'
FROM picks p
WHERE NOT EXISTS (SELECT 1 FROM course_students x
                  WHERE x.course_id = p.course_id AND x.student_id = p.student_id);

-- Enrollments withdrawn, and their marks with them (what the application does): one in 1,997.
DELETE FROM grades WHERE course_student_id IN (SELECT id FROM course_students WHERE id % 1997 = 13);
DELETE FROM course_students WHERE id % 1997 = 13;

-- Logins: one account in five.
UPDATE users
SET last_login = timestamp '2025-12-19 08:00' + (id % 36000) * interval '1 second'
WHERE id % 5 = 2;

-- Contact details changed: one person in 101.
UPDATE persons
SET phone = '+994 50 ' || lpad((id % 1000)::text, 3, '0') || ' ' || lpad((id % 97)::text, 2, '0')
            || ' ' || lpad((id % 89)::text, 2, '0'),
    address = 'Bakı, Nəsimi r-nu, ' || (id % 200)::text || ' küç.'
WHERE id % 101 = 3;

-- New students: one in 200 existing student accounts is the template of a new account, person
-- and student record (new username, e-mail, personal code and card number).
CREATE TEMP TABLE new_students ON COMMIT DROP AS
SELECT t.id AS template_user,
       (SELECT max(id) FROM users) + row_number() OVER (ORDER BY t.id) AS user_id,
       (SELECT max(id) FROM persons) + row_number() OVER (ORDER BY t.id) AS person_id,
       (SELECT max(id) FROM students) + row_number() OVER (ORDER BY t.id) AS student_id,
       row_number() OVER (ORDER BY t.id) AS n
FROM users t
WHERE t.user_type = 1 AND t.id % 200 = 7
  AND EXISTS (SELECT 1 FROM persons p WHERE p.user_id = t.id)
  AND EXISTS (SELECT 1 FROM students s WHERE s.user_id = t.id);

INSERT INTO users (id, username, email, password, user_type, is_active, last_login, created_at, updated_at)
SELECT n.user_id, 'new2025.' || n.user_id, 'new2025.' || n.user_id || '@student.edu.az', u.password,
       1, 1, NULL, timestamp '2025-12-19 11:00', timestamp '2025-12-19 11:00'
FROM new_students n JOIN users u ON u.id = n.template_user;

INSERT INTO persons (id, user_id, firstname, lastname, patronymic, birthdate, gender, pin, phone, address, created_at)
SELECT DISTINCT ON (n.person_id)
       n.person_id, n.user_id, p.firstname, p.lastname, p.patronymic, '01.09.2007', p.gender,
       upper(substr(md5('new person ' || n.person_id), 1, 7)), p.phone, p.address,
       timestamp '2025-12-19 11:00'
FROM new_students n JOIN persons p ON p.user_id = n.template_user
ORDER BY n.person_id, p.id;

INSERT INTO students (id, user_id, person_id, org_id, student_no, admission_year, status, gpa, group_name, education_form, created_at)
SELECT DISTINCT ON (n.student_id)
       n.student_id, n.user_id, n.person_id, s.org_id, '2025' || lpad((90000 + n.n)::text, 5, '0'),
       2025, 'active', NULL, s.group_name, s.education_form, timestamp '2025-12-19 11:00'
FROM new_students n JOIN students s ON s.user_id = n.template_user
ORDER BY n.student_id, s.id;
