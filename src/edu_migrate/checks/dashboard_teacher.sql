-- What the dashboard of the teacher with the given username must show, as (kind, value) rows:
-- 'text' the code of each course they teach and the number of each student on their rosters;
-- 'number' each mark (an absence has none) and each final score in their offerings.
WITH taught AS (
    SELECT o.id, o.course_id
    FROM users u
    JOIN staff_members m ON m.user_id = u.id
    JOIN course_offerings o ON o.instructor_id = m.id
    WHERE u.username = %(username)s
), enrolled AS (
    SELECT e.id, e.student_id, e.final_score
    FROM course_enrollments e JOIN taught t ON t.id = e.course_offering_id
)
SELECT DISTINCT 'text' AS kind, c.code AS value
FROM taught t JOIN courses c ON c.id = t.course_id
UNION ALL
SELECT DISTINCT 'text', s.student_number
FROM enrolled e JOIN students s ON s.id = e.student_id
UNION ALL
SELECT 'number', g.score::text
FROM enrolled e JOIN grades g ON g.enrollment_id = e.id
WHERE g.score IS NOT NULL
UNION ALL
SELECT 'number', e.final_score::text
FROM enrolled e
WHERE e.final_score IS NOT NULL
