-- The signed-in student's own record.
SELECT s.student_number, s.status, s.group_name, s.admission_year, s.gpa::float8 AS gpa,
       o.name AS program
FROM students s
LEFT JOIN organization_units o ON o.id = s.program_id
WHERE s.id = current_student_id()
