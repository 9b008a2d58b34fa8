-- The incremental validation's statements (checks/incremental.py). {crosswalk}, {rejected} and
-- {repairs} are the tables themselves (a full validation establishing the baseline) or only
-- their rows in pg_temp.ranges_now (the ranges to read again), one index range scan per range;
-- {bucket} is the expression of an edu_v2 id's bucket.

-- name: accounting_ranges
-- Per range of 64 legacy ids: the accounting's target side, as validation.accounted_ids counts
-- it for the whole table (distinct ids migrated, ids set aside, ids both, merges, and the
-- fingerprint of the ids migrated or set aside).
WITH migrated AS (SELECT DISTINCT c.source_id FROM {crosswalk} c),
     rejected AS (SELECT r.source_id FROM {rejected} r WHERE r.source_table = %(t)s),
     merged AS (SELECT p.source_id >> 6 AS bucket, count(*) AS n FROM {repairs} p
                WHERE p.source_table = %(t)s AND p.rule LIKE '%%merged%%' GROUP BY 1),
     ids AS (SELECT source_id, true AS m FROM migrated
             UNION ALL SELECT source_id, false FROM rejected),
     per AS (SELECT source_id >> 6 AS bucket, count(*) FILTER (WHERE m) AS migrated,
                    count(*) FILTER (WHERE NOT m) AS set_aside, count(*) AS ids,
                    sum(source_id) AS id_sum, sum(hashint8extended(source_id, 0)) AS id_hash_sum
             FROM ids GROUP BY 1),
     both_ways AS (SELECT m.source_id >> 6 AS bucket, count(*) AS n FROM migrated m
                   JOIN rejected r USING (source_id) GROUP BY 1)
SELECT bucket, coalesce(per.migrated, 0), coalesce(per.set_aside, 0), coalesce(both_ways.n, 0),
       coalesce(merged.n, 0), coalesce(per.ids, 0), coalesce(per.id_sum, 0),
       coalesce(per.id_hash_sum, 0)
FROM per FULL JOIN merged USING (bucket) LEFT JOIN both_ways USING (bucket)

-- name: orphan_buckets
-- Per bucket of the child's ids: its rows whose parent is missing (only buckets with some).
SELECT {bucket} AS bucket, count(*) FROM {child} c
LEFT JOIN {parent} p ON c.{fk} = p.id WHERE p.id IS NULL GROUP BY 1

-- name: orphan_buckets_now
-- The same for the buckets in pg_temp.buckets_now only: one index range scan of the child and
-- one look-up of each row's parent per bucket. OFFSET 0 keeps the planner from turning them
-- into scans of the whole tables: the outer one keeps the range scan per bucket; the inner one
-- keeps NOT EXISTS a look-up per row, never an anti join, whose plan the planner prices with a
-- range of a parameter (half a percent of the child's rows): at scale 10 it hashed all 1.2
-- million enrollments once per bucket, 42 s for the 153 marks of a last delta.
SELECT k.bucket, o.n FROM pg_temp.buckets_now k
CROSS JOIN LATERAL (SELECT count(*) AS n FROM {child} c WHERE c.id BETWEEN k.lo AND k.hi
                    AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = c.{fk} OFFSET 0)
                    OFFSET 0) o
WHERE o.n > 0

-- name: rows_in_ranges
-- A table's rows in the ranges of pg_temp.ranges_now, by an index range scan per range.
(SELECT x.* FROM pg_temp.ranges_now k
 CROSS JOIN LATERAL (SELECT * FROM {table} y WHERE {filter} y.source_id BETWEEN k.lo AND k.hi
                     OFFSET 0) x)

-- name: affected_buckets
-- The child's buckets whose orphans may differ from the baseline's: those of the child's ids
-- written since, and those of the child's rows whose parent came or went since. The children of
-- such a parent are looked up by their key, in the index each foreign key has (OFFSET 0: the
-- planner cannot pull the subquery up into a join, which it could price as a hash of every row
-- of the child, as it did in orphan_buckets_now for the 32 million marks at scale 10).
SELECT DISTINCT {bucket} FROM migration.validation_touched_keys c WHERE c.relation = %(child)s
UNION
SELECT x.bucket FROM migration.validation_touched_keys t
CROSS JOIN LATERAL (SELECT {bucket} AS bucket FROM {child} c WHERE c.{fk} = t.id OFFSET 0) x
WHERE t.relation = %(parent)s
  AND t.existed_before <> EXISTS (SELECT 1 FROM {parent} p WHERE p.id = t.id)

-- name: count_moved
-- How many rows the table gained since the baseline: each id written counts its existence now
-- less its existence then.
SELECT coalesce(sum((EXISTS (SELECT 1 FROM {table} x WHERE x.id = t.id))::int
                    - t.existed_before::int), 0)
FROM migration.validation_touched_keys t WHERE t.relation = %(table)s

-- name: note_ranges_trigger
-- One trigger per kind of write: a transition table belongs to one event. ENABLE ALWAYS: a
-- session in replication mode (session_replication_role = replica) is noted too.
CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition}
FOR EACH STATEMENT EXECUTE FUNCTION migration.{function}({arguments})
