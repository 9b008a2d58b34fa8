-- How a sync writes what it derived again of phases 1–4 (phases/sync.py). The phase's own rules
-- run unchanged, but into a temporary table of the same name as each table the phase writes,
-- which comes first on the search path; then only the rows that came out differently touch the
-- real table. A login changes one column of one user, and every other user, person, student and
-- offering would otherwise be deleted and written again, each with its index entries, its WAL
-- and the deferred check of every foreign key that points at it or from it (seconds a sync).
-- The table's content at the end is the derived set exactly, as with a DELETE and an INSERT.
-- {table} is the real table, {shadow} its temporary twin, {columns} its columns that can be
-- written (not generated), {key} its primary key's columns.

-- name: shadow
-- The twin has the real table's defaults, checks and unique indexes, so a rule that breaks one
-- fails here as it would there; no foreign keys: the real table's are checked at commit.
CREATE TEMP TABLE {shadow} (LIKE {table} INCLUDING ALL) ON COMMIT DROP

-- name: drop_differing
-- Every real row that is not in the derived set exactly as it is: gone, changed, or (a row
-- whose key stays) changed in any column. A whole row's text is compared: equal text is equal
-- content, and a type without an equality operator compares too.
DELETE FROM {table} t
WHERE NOT EXISTS (SELECT 1 FROM {shadow} s WHERE ({key_s}) = ({key_t}) AND s::text = t::text)

-- name: drop_differing_in_scope
-- The same, when the rules derived only the rows in scope ({keys}: their ids): a real row out of
-- scope is not in the derived set and stays as it is.
DELETE FROM {table} t USING {keys} k
WHERE ({key_t}) = (k.id)
  AND NOT EXISTS (SELECT 1 FROM {shadow} s WHERE ({key_s}) = ({key_t}) AND s::text = t::text)

-- name: add_differing
-- The derived rows that the real table no longer holds: new ones and the changed ones just
-- deleted. After the DELETE above every real row left is identical to its derived row, so no
-- unique index can see two rows of one key, even where a rule moved a name from one to another.
INSERT INTO {table} ({columns})
SELECT {columns} FROM {shadow} s
WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE ({key_t}) = ({key_s}))

-- name: drop_shadow
DROP TABLE {shadow}
