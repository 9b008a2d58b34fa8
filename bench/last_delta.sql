-- The last minutes before the cutover, applied to the live copy after the day's sync: what the
-- final delta holds when the applications are stopped. Deterministic and scaled by the data, like
-- day_of_changes.sql; at scale 1 about 800 marks re-entered, 350 new, 70 logins and 12 final
-- scores.

INSERT INTO grades (id, course_student_id, grade_type, value, lesson_date, teacher_id, created_at)
SELECT (SELECT max(id) FROM grades) + row_number() OVER (ORDER BY e.id, n),
       e.id, 2, ((e.id * 3 + n) % 11)::text, date '2025-12-20', c.teacher_id,
       timestamp '2025-12-20 15:00' + (e.id % 120) * interval '1 minute'
FROM course_students e
JOIN courses c ON c.id = e.course_id
CROSS JOIN generate_series(1, 3) AS n
WHERE e.id % 1009 = 3;

UPDATE grades
SET value = ((id + 1) % (CASE grade_type WHEN 1 THEN 2 WHEN 5 THEN 21 WHEN 6 THEN 51 ELSE 11 END))::text
WHERE id % 4001 = 29;

UPDATE users
SET last_login = timestamp '2025-12-20 16:00' + (id % 3600) * interval '1 second'
WHERE id % 97 = 1;

UPDATE course_students
SET final_score = greatest(0, coalesce(final_score, 60) - 1)
WHERE id % 9973 = 1;
