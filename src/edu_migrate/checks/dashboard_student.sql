-- What the dashboard of the student with the given username must show, as (kind, value) rows:
-- 'text' their last name and the code of each course they are enrolled in; 'number' each of
-- their marks (an absence has none) and each final score.
SELECT 'text' AS kind, p.last_name AS value
FROM users u JOIN persons p ON p.user_id = u.id
WHERE u.username = %(username)s
UNION ALL
SELECT DISTINCT 'text', c.code
FROM users u
JOIN students s ON s.user_id = u.id
JOIN course_enrollments e ON e.student_id = s.id
JOIN course_offerings o ON o.id = e.course_offering_id
JOIN courses c ON c.id = o.course_id
WHERE u.username = %(username)s
UNION ALL
SELECT 'number', g.score::text
FROM users u
JOIN students s ON s.user_id = u.id
JOIN course_enrollments e ON e.student_id = s.id
JOIN grades g ON g.enrollment_id = e.id
WHERE u.username = %(username)s AND g.score IS NOT NULL
UNION ALL
SELECT 'number', e.final_score::text
FROM users u
JOIN students s ON s.user_id = u.id
JOIN course_enrollments e ON e.student_id = s.id
WHERE u.username = %(username)s AND e.final_score IS NOT NULL
