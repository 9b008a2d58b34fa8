-- Foreign keys whose columns lead no index of their table: every delete or key change in the
-- parent, and every join from the parent, reads the whole child table.
SELECT n.nspname AS schema_name, t.relname AS table_name, c.conname,
       array_agg(a.attname::text ORDER BY k.ord) AS columns,
       greatest(t.reltuples, 0)::bigint AS rows_estimate
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.contype = 'f' AND c.conparentid = 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = c.conrelid AND i.indpred IS NULL
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
GROUP BY n.nspname, t.relname, c.conname, t.reltuples
ORDER BY rows_estimate DESC, 1, 2, 3
