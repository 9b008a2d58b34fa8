-- Users whose username, e-mail, name or student number match the LIKE pattern given.
SELECT u.username, u.email, u.role, u.is_active, u.last_login_at, p.first_name, p.last_name,
       s.student_number
FROM users u
LEFT JOIN persons p ON p.user_id = u.id
LEFT JOIN students s ON s.user_id = u.id
WHERE u.username ILIKE %(pattern)s OR u.email ILIKE %(pattern)s
   OR p.first_name ILIKE %(pattern)s OR p.last_name ILIKE %(pattern)s
   OR p.first_name || ' ' || p.last_name ILIKE %(pattern)s
   OR s.student_number ILIKE %(pattern)s
ORDER BY lower(u.username), u.username
LIMIT %(limit)s
