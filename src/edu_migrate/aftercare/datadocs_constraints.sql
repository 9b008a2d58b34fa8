-- The constraints of one relation (%(oid)s): name, kind, definition; foreign keys also give the
-- table they reference (for the ER diagram).
SELECT c.conname,
       CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
                      WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' ELSE c.contype::text END,
       pg_get_constraintdef(c.oid),
       CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text END
FROM pg_constraint c
WHERE c.conrelid = %(oid)s::regclass
ORDER BY array_position(ARRAY['p', 'u', 'f', 'c', 'x']::"char"[], c.contype), c.conname
