-- Open transactions by state: the oldest one's age in seconds (0 when none is open), and how
-- many have been open over 5 minutes. Every state has a row.
SELECT s.state,
       coalesce(max(extract(epoch FROM clock_timestamp() - a.xact_start)), 0) AS oldest_seconds,
       count(a.pid) FILTER (WHERE a.xact_start < clock_timestamp() - interval '5 minutes')
           AS open_over_5_minutes
FROM (VALUES ('active'), ('idle in transaction'), ('idle in transaction (aborted)'))
     AS s(state)
LEFT JOIN pg_stat_activity a ON a.state = s.state AND a.xact_start IS NOT NULL
      AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
GROUP BY s.state
