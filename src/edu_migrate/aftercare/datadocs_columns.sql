-- The columns of one relation (%(oid)s), in order: name, type, NOT NULL, default, comment.
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(oid)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
