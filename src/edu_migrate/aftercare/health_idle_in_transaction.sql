-- Sessions that opened a transaction and went quiet: they hold locks and hold back vacuum.
SELECT pid, coalesce(nullif(application_name, ''), '(none)') AS application,
       extract(epoch FROM now() - state_change)::int AS seconds
FROM pg_stat_activity
WHERE datname = current_database() AND state LIKE 'idle in transaction%%'
  AND now() - state_change > make_interval(secs => %(seconds)s)
ORDER BY state_change
