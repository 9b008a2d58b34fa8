-- Courses whose code or name (in any language) match the LIKE pattern given.
SELECT c.code, c.name, c.credit_hours::float8 AS credit_hours,
       (SELECT count(*) FROM course_offerings o WHERE o.course_id = c.id) AS offerings
FROM courses c
WHERE c.code ILIKE %(pattern)s OR c.name ->> 'az' ILIKE %(pattern)s
   OR c.name ->> 'en' ILIKE %(pattern)s OR c.name ->> 'ru' ILIKE %(pattern)s
ORDER BY c.code
LIMIT %(limit)s
