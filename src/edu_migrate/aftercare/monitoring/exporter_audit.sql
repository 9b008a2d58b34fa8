-- Rows written to the audit trail (schema audit) since the statistics were last reset: its
-- rate is the audit log's write rate.
SELECT coalesce(sum(n_tup_ins), 0) AS rows_written_total
FROM pg_stat_user_tables
WHERE schemaname = 'audit'
