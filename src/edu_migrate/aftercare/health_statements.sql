-- The statements of this database that cost most in total, and those run most often.
(SELECT 'slowest' AS kind, query, calls, mean_exec_time, total_exec_time
 FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC LIMIT %(limit)s)
UNION ALL
(SELECT 'most frequent', query, calls, mean_exec_time, total_exec_time
 FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY calls DESC LIMIT %(limit)s)
