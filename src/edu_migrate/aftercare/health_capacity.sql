-- Client sessions of the whole server against the connections it accepts.
SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS sessions,
       current_setting('max_connections')::int
           - current_setting('superuser_reserved_connections')::int AS usable
FROM pg_stat_activity
