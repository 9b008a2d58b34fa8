-- Row-level security of the business tables: enabled, and forced on their owner too.
SELECT t AS table_name, c.relrowsecurity, c.relforcerowsecurity
FROM unnest(%(tables)s::text[]) t
JOIN pg_class c ON c.oid = to_regclass('public.' || quote_ident(t))
ORDER BY 1
