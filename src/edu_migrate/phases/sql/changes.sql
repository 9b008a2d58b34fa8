-- Statements of phases/changes.py, run on the source in the sync's snapshot.

-- name: same_commits
-- Whether the source committed no transaction that the sync's snapshot %(c)s sees and the
-- mirror's snapshot %(m)s did not: then no row of any table can differ between the two, and a
-- table's scan finds nothing. A transaction %(c)s sees and %(m)s does not is one that %(m)s
-- listed as running, or one at or past %(m)s's xmax and before %(c)s's, that %(c)s does not
-- list as running, and that committed. Conservative at every step, never the other way:
-- - transaction ids are of the whole cluster: a commit in another database counts;
-- - pg_xact_status is the status now, not at %(c)s: one that committed after %(c)s was taken
--   is still not visible in %(c)s (it is in its list), unless it is a subtransaction, whose
--   id a pg_snapshot does not list (its parent's is): then it counts, as if visible. A
--   subtransaction of a parent still running is 'in progress' and does not count: its rows
--   become visible with its parent's commit, and the parent is in %(c)s's list, which the
--   next sync reads as its %(m)s;
-- - a status it cannot tell (NULL: older than the commit log kept) counts as committed;
-- - a prepared transaction is running (listed, 'in progress') until COMMIT PREPARED, and then
--   the next sync finds it among the running ones of the snapshot this sync records.
-- Only %(reach)s ids past %(m)s's xmax are looked at one by one; beyond, the tables are
-- scanned.
SELECT pg_snapshot_xmax(c) >= pg_snapshot_xmax(m)
   AND pg_snapshot_xmax(c)::text::bigint - pg_snapshot_xmax(m)::text::bigint <= %(reach)s
   AND NOT EXISTS (
       SELECT 1 FROM (
           SELECT x FROM pg_snapshot_xip(m) x
           UNION ALL
           SELECT g::text::xid8 FROM generate_series(
               pg_snapshot_xmax(m)::text::bigint,
               least(pg_snapshot_xmax(c)::text::bigint,
                     pg_snapshot_xmax(m)::text::bigint + %(reach)s) - 1) g
       ) seen_since (x)
       WHERE pg_visible_in_snapshot(x, c)
         AND coalesce(pg_xact_status(x), 'committed') = 'committed')
FROM (SELECT %(c)s::pg_snapshot AS c, %(m)s::pg_snapshot AS m) snapshots;
