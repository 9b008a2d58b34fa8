-- Who is still connected to a database (our own session left out).
SELECT count(*), string_agg(DISTINCT coalesce(nullif(application_name, ''), '(none)'), ', ')
FROM pg_stat_activity
WHERE datname = %(name)s AND pid <> pg_backend_pid()
