-- The marks of the given enrollments, one row per enrollment and assessment,
-- in the order of the course: attendance first, the final exam last. A NULL score is an absence.
SELECT g.enrollment_id, a.assessment_type, a.title, a.max_score::float8 AS max_score,
       array_agg(g.score::float8 ORDER BY g.graded_on NULLS LAST, g.id) AS scores
FROM grades g
JOIN assessments a ON a.id = g.assessment_id
WHERE g.enrollment_id = ANY(%(enrollments)s)
GROUP BY g.enrollment_id, a.id, a.assessment_type, a.title, a.max_score
ORDER BY g.enrollment_id, array_position(ARRAY['attendance', 'seminar', 'colloquium',
         'independent_work', 'midterm', 'final_exam'], a.assessment_type), a.id
