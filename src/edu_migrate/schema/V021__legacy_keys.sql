-- Every edu_v2 row's legacy key, as one relation: the crosswalk's surviving legacy row (the one
-- whose derived id is the row's id; the rows merged into it map to it too, and are not its key)
-- and the rows created on edu_v2 since a cutover (migration.created_rows).
--
-- Why a view beside migration.legacy_id(): the inverse rules look up a legacy key for every
-- row of a fallback's delta, up to three times each. A call of a SQL function that the planner
-- cannot inline costs about 0.1 ms (it plans and starts its own executor each time), which made
-- a day's 32,000 marks take 50 s to invert at scale 1; the same lookup written as a scalar
-- subquery over this view is planned once with the statement and costs 0.02-0.04 ms.
CREATE VIEW migration.legacy_keys AS
SELECT l.target_table, c.target_id, c.source_id
FROM migration.legacy_tables l
JOIN migration.crosswalk c ON c.source_table = l.source_table
WHERE migration.derive_id(l.id_kind, c.source_id::text) = c.target_id
UNION ALL
SELECT r.target_table, r.target_id, r.source_id FROM migration.created_rows r;

COMMENT ON VIEW migration.legacy_keys IS
    'The legacy key of every edu_v2 row that has one: the crosswalk''s surviving legacy row, or '
    'the legacy id given to a row created on edu_v2 after a cutover.';

-- The function stays, for people and for one-off queries: the same rule, from the view.
CREATE OR REPLACE FUNCTION migration.legacy_id(target text, id uuid) RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT k.source_id FROM migration.legacy_keys k
    WHERE k.target_table = target AND k.target_id = id LIMIT 1
$$;
