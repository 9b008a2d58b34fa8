-- How a sync writes what it derived again of phases 1–4 (phases/sync.py). The phase's own rules
-- run unchanged, but into a temporary table of the same name as each table the phase writes,
-- which comes first on the search path; then only the rows that came out differently touch the
-- real table. A login changes one column of one user, and every other user, person, student and
-- offering would otherwise be deleted and written again, each with its index entries, its WAL
-- and the deferred check of every foreign key that points at it or from it (seconds a sync).
-- The table's content at the end is the derived set exactly, as with a DELETE and an INSERT.
-- {table} is the real table, {shadow} its temporary twin, {columns} its columns that can be
-- written (not generated), {key} its primary key's columns.
-- A table applied in place (grades: millions of rows, a day changes a score here and there)
-- keeps a row whose key and unique columns stay, and updates it: one heap write, which the
-- table's free space lets stay on its page (a HOT update: no index entry, and no foreign-key
-- check, as no key column changed), where a DELETE and an INSERT would add an entry to each
-- index and check each foreign key again.

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

-- name: drop_gone_in_place
-- In place: the real rows in scope whose key the derived set lacks. The twin is small and read
-- first, so only those keys are looked up in the real table.
DELETE FROM {table} t
USING (SELECT k.id FROM {keys} k
       WHERE NOT EXISTS (SELECT 1 FROM {shadow} s WHERE ({key_s}) = (k.id)) OFFSET 0) k
WHERE ({key_t}) = (k.id)

-- name: merge_in_place
-- Then every derived row: updated where it differs, inserted where it is new. Only for a table
-- whose other unique columns follow its key (grades: its id is derived from its legacy_id), so
-- that an update moves no unique value from one row to another; one that did would fail here,
-- loudly, never write a wrong row. A nested loop over the twin, one probe of the key per
-- derived row (phases/sync.py turns off the hash join a planner picks here, which reads the
-- whole real table to find 1 % of it).
MERGE INTO {table} t USING {shadow} s ON ({key_t}) = ({key_s})
WHEN MATCHED AND s::text <> t::text THEN UPDATE SET ({columns}) = ROW({values})
WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})

-- name: drop_shadow
DROP TABLE {shadow}
