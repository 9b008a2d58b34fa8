-- Every table and view of edu_v2 but the staged legacy rows (schema stage, rebuilt by each run)
-- and partitions (their parent stands for them): schema, name, kind, comment, row security.
SELECT n.nspname, c.relname, CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END,
       obj_description(c.oid, 'pg_class'), c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'stage')
  AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname <> 'public', n.nspname, c.relname
