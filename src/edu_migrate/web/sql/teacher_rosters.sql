-- The students enrolled in the given offerings, by student number.
SELECT e.id, e.course_offering_id, s.student_number, p.first_name, p.last_name,
       e.enrollment_status AS status, e.final_score::float8 AS final_score,
       e.grade AS letter_grade
FROM course_enrollments e
JOIN students s ON s.id = e.student_id
JOIN persons p ON p.id = s.person_id
WHERE e.course_offering_id = ANY(%(offerings)s)
ORDER BY s.student_number, e.id
