-- The students enrolled in the given offerings, by student number. A teacher reads their
-- students through taught_students: name, student number and e-mail, nothing more.
SELECT e.id, e.course_offering_id, s.student_number, s.first_name, s.last_name,
       e.enrollment_status AS status, e.final_score::float8 AS final_score,
       e.grade AS letter_grade
FROM course_enrollments e
JOIN taught_students s ON s.id = e.student_id
WHERE e.course_offering_id = ANY(%(offerings)s)
ORDER BY s.student_number, e.id
