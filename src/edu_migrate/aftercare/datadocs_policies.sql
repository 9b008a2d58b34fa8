-- The row-level security policies of one table: name, command, roles, permissive, USING and
-- WITH CHECK expressions.
SELECT policyname, cmd, array_to_string(roles, ', '), permissive, qual, with_check
FROM pg_policies WHERE schemaname = %(schema)s AND tablename = %(table)s
ORDER BY policyname
