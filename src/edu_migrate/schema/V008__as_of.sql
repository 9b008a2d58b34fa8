-- edu_v2, version 8: the run's as-of time. Every rule that asks "now" or "today" (a date in the
-- future, the current term, a missing timestamp) asks migration.as_of() instead, so the same
-- legacy data at the same as-of time gives the same edu_v2 whenever the run happens.
-- `migrate --as-of` sets it, else the first phase records the source snapshot's time; reruns,
-- resumes and rollbacks of single phases keep it, `rollback --all` clears it.

ALTER TABLE migration.state ADD COLUMN as_of timestamptz;

-- The phase's transaction copies migration.state.as_of into the setting edu_migrate.as_of
-- (as it does the id secret). Outside a phase the setting is unset and this raises: a rule
-- never falls back to the wall clock.
CREATE FUNCTION migration.as_of() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN current_setting('edu_migrate.as_of')::timestamptz;

-- The as-of time's calendar day in Baku, where the legacy dates were written: "in the future"
-- means after this day, whatever the server's time zone.
CREATE FUNCTION migration.as_of_date() RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (migration.as_of() AT TIME ZONE 'Asia/Baku')::date;
