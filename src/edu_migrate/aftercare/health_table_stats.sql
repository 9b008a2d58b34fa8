-- Tables the planner knows nothing about (never analysed; below analyse_minimum rows a guess
-- costs little) or that carry many dead rows.
SELECT schemaname, relname, n_live_tup, n_dead_tup,
       coalesce(last_analyze, last_autoanalyze) IS NULL AS never_analysed
FROM pg_stat_user_tables
WHERE schemaname <> ALL(%(skip)s)
  AND ((coalesce(last_analyze, last_autoanalyze) IS NULL
        AND n_live_tup + n_mod_since_analyze >= %(analyse_minimum)s)
       OR (n_dead_tup > %(dead_minimum)s AND n_dead_tup > %(dead_share)s * n_live_tup))
ORDER BY n_dead_tup DESC, 1, 2
