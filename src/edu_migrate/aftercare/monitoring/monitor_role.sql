-- The role postgres_exporter signs in as: it reads the statistics views (pg_monitor) and the
-- backup entries of migration.run_log, nothing of the LMS's rows. Run as a superuser:
--   psql -d EDU_V2_DATABASE -f monitor_role.sql
-- then give it a password with psql's \password edu_monitor, and put that password in the
-- exporter's password file (PGPASSFILE), not in postgres_exporter.env.
CREATE ROLE edu_monitor LOGIN;
GRANT pg_monitor TO edu_monitor;
GRANT CONNECT ON DATABASE "EDU_V2_DATABASE" TO edu_monitor;
GRANT USAGE ON SCHEMA migration TO edu_monitor;
GRANT SELECT ON migration.run_log TO edu_monitor;
