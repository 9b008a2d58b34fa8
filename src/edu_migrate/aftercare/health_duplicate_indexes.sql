-- An index is redundant when another index of the same table and kind has the same columns
-- (a duplicate), or begins with all of its columns (a plain btree that the longer one serves).
-- The index kept is the one that enforces something, else the older one.
SELECT n.nspname AS schema_name, t.relname AS table_name,
       redundant.relname AS index_name, kept.relname AS kept_index,
       r.indkey::text = k.indkey::text AS exact
FROM pg_index r
JOIN pg_index k ON k.indrelid = r.indrelid AND k.indexrelid <> r.indexrelid
JOIN pg_class redundant ON redundant.oid = r.indexrelid
JOIN pg_class kept ON kept.oid = k.indexrelid
JOIN pg_class t ON t.oid = r.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname <> ALL(%(skip)s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND redundant.relam = kept.relam
  AND r.indpred IS NULL AND k.indpred IS NULL AND r.indexprs IS NULL AND k.indexprs IS NULL
  AND NOT r.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = r.indexrelid)
  AND (   (r.indkey::text = k.indkey::text AND r.indclass::text = k.indclass::text
           AND (k.indisunique OR NOT r.indisunique)
           AND (k.indisunique > r.indisunique OR k.indexrelid < r.indexrelid
                OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = k.indexrelid)))
       OR (NOT r.indisunique AND redundant.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
           AND (k.indkey::text || ' ') LIKE (r.indkey::text || ' %%')
           AND r.indkey::text <> k.indkey::text))
ORDER BY 1, 2, 3
