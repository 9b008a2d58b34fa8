-- What edu_v2 holds, for the administrator's panel.
SELECT (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM users WHERE is_active) AS active_users,
       (SELECT count(*) FROM students) AS students,
       (SELECT count(*) FROM staff_members) AS staff,
       (SELECT count(*) FROM courses) AS courses,
       (SELECT count(*) FROM course_offerings) AS offerings,
       (SELECT count(*) FROM course_enrollments) AS enrollments,
       (SELECT count(*) FROM grades) AS marks
