-- The current value of each parameter, its unit, and when a change takes effect
-- (context 'postmaster': at the next restart).
SELECT name, setting, unit, context
FROM pg_settings
WHERE name = ANY(%(names)s)
