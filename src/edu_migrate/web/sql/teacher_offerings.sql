-- The offerings the signed-in teacher teaches, newest term first, with the size of each roster.
SELECT o.id, c.code, c.name, t.name AS term, t.is_current, o.section_code, o.max_students,
       (SELECT count(*) FROM course_enrollments e WHERE e.course_offering_id = o.id) AS enrolled
FROM course_offerings o
JOIN courses c ON c.id = o.course_id
JOIN academic_terms t ON t.id = o.academic_term_id
WHERE o.instructor_id = current_staff_id()
ORDER BY t.start_date DESC, c.code, o.section_code, o.id
