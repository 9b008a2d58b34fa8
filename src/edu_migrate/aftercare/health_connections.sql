-- Sessions of this database, by state and application (our own session left out).
SELECT coalesce(state, 'background') AS state,
       coalesce(nullif(application_name, ''), '(none)') AS application,
       count(*) AS sessions
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2
