-- The signed-in student's enrollments, newest term first.
SELECT e.id, c.code, c.name, c.credit_hours::float8 AS credit_hours, t.name AS term,
       o.section_code, e.enrollment_status AS status, e.final_score::float8 AS final_score,
       e.grade AS letter_grade
FROM course_enrollments e
JOIN course_offerings o ON o.id = e.course_offering_id
JOIN courses c ON c.id = o.course_id
JOIN academic_terms t ON t.id = o.academic_term_id
WHERE e.student_id = current_student_id()
ORDER BY t.start_date DESC, c.code, e.id
