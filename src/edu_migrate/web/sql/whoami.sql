-- The signed-in user and their name, as row-level security lets them see themselves.
SELECT u.username, u.role, p.first_name, p.last_name
FROM users u LEFT JOIN persons p ON p.user_id = u.id
WHERE u.id = current_user_id()
