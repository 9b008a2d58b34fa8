-- The business tables (schema public): live and dead rows, and the Unix time of the last
-- vacuum and analyse, manual or automatic (0: never).
SELECT relname AS "table", n_live_tup AS live_rows, n_dead_tup AS dead_rows,
       coalesce(extract(epoch FROM greatest(last_vacuum, last_autovacuum)), 0)
           AS last_vacuum_timestamp_seconds,
       coalesce(extract(epoch FROM greatest(last_analyze, last_autoanalyze)), 0)
           AS last_analyse_timestamp_seconds
FROM pg_stat_user_tables
WHERE schemaname = 'public'
