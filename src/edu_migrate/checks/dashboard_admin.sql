-- What the administrator's panel must show, as (kind, value) rows: 'count' the numbers of
-- users, students and courses; 'find' a search that must find what follows it: the student
-- number of the given student account finds its username, a course's Azerbaijani name its code.
SELECT 'count' AS kind, 'users' AS value, count(*)::text AS expected FROM users
UNION ALL
SELECT 'count', 'students', count(*)::text FROM students
UNION ALL
SELECT 'count', 'courses', count(*)::text FROM courses
UNION ALL
(SELECT 'find', s.student_number, u.username
 FROM users u JOIN students s ON s.user_id = u.id
 WHERE u.username = %(student)s)
UNION ALL
(SELECT 'find', c.name ->> 'az', c.code
 FROM courses c
 -- A name with Azerbaijani letters, where there is one: the search must carry them intact.
 ORDER BY c.name ->> 'az' ~ '[əğıöüşçƏĞİÖÜŞÇ]' DESC, c.code LIMIT 1)
