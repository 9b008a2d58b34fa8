-- Client sessions of the whole server by state: max_connections counts them all, whichever
-- database they use. Every state has a row, 0 when no session is in it.
SELECT s.state, count(a.pid) AS sessions
FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('idle in transaction (aborted)'),
             ('fastpath function call'), ('disabled')) AS s(state)
LEFT JOIN pg_stat_activity a ON a.state = s.state AND a.backend_type = 'client backend'
GROUP BY s.state
