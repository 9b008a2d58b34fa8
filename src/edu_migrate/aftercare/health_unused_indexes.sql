-- Indexes never scanned since the statistics began that enforce nothing and support no
-- foreign key: they cost every write and buy no read.
SELECT s.schemaname, s.relname, s.indexrelname,
       pg_relation_size(s.indexrelid) AS bytes,
       coalesce((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
                pg_postmaster_start_time()) AS counted_since
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
  AND s.schemaname <> ALL(%(skip)s)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
  AND NOT EXISTS (
      SELECT 1 FROM pg_constraint f
      WHERE f.contype = 'f' AND f.conrelid = i.indrelid
        AND (i.indkey::int2[])[0:cardinality(f.conkey) - 1] @> f.conkey
        AND (i.indkey::int2[])[0:cardinality(f.conkey) - 1] <@ f.conkey)
ORDER BY bytes DESC, 1, 2, 3
