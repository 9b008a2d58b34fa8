-- The comment on the connected database (COMMENT ON DATABASE), or none.
SELECT shobj_description(d.oid, 'pg_database') FROM pg_database d
WHERE d.datname = current_database()
