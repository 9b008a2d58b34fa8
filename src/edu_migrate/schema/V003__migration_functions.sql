-- edu_v2, version 3: value parsers used by the phases. Each returns NULL for a value it does not
-- recognise instead of raising, so one bad legacy value sets a row aside rather than ending a run.

-- Collapse every kind of white space (no-break and zero-width included) and trim; '' becomes NULL.
CREATE FUNCTION migration.clean_text(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN nullif(btrim(regexp_replace(value,
    '[[:space:]\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]+', ' ', 'g')), '');

-- A decimal written with a point or a comma: '78.45', '78,45', '8'. Nothing else.
CREATE FUNCTION migration.parse_decimal(value text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN replace(migration.clean_text(value), ',', '.') ~ '^[+-]?[0-9]{1,9}(\.[0-9]{1,6})?$'
    THEN replace(migration.clean_text(value), ',', '.')::numeric
END;

-- A calendar date from its parts, or NULL when it does not exist (31.02, month 13, year 0).
CREATE FUNCTION migration.safe_date(y integer, m integer, d integer) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN y BETWEEN 1 AND 9999 AND m BETWEEN 1 AND 12 AND d >= 1
         AND d <= extract(day FROM make_date(y, m, 1) + interval '1 month - 1 day')
    THEN make_date(y, m, d)
END;

-- The legacy text dates: DD.MM.YYYY, YYYY-MM-DD or D/M/YYYY.
CREATE FUNCTION migration.parse_legacy_date(value text) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN migration.clean_text(value) ~ '^[0-9]{1,2}[./][0-9]{1,2}[./][0-9]{4}$'
    THEN migration.safe_date(
        split_part(translate(migration.clean_text(value), '/', '.'), '.', 3)::integer,
        split_part(translate(migration.clean_text(value), '/', '.'), '.', 2)::integer,
        split_part(translate(migration.clean_text(value), '/', '.'), '.', 1)::integer)
    WHEN migration.clean_text(value) ~ '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$'
    THEN migration.safe_date(
        split_part(migration.clean_text(value), '-', 1)::integer,
        split_part(migration.clean_text(value), '-', 2)::integer,
        split_part(migration.clean_text(value), '-', 3)::integer)
END;

-- A course code as one course: 'MAT101', ' mat101', 'MAT-101' and 'MAT 101' are all 'MAT101'.
CREATE FUNCTION migration.normalise_course_code(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN nullif(upper(regexp_replace(coalesce(value, ''), '[^[:alnum:]]', '', 'g')), '');

-- Legacy local times are Baku wall-clock times.
CREATE FUNCTION migration.baku_time(value timestamp) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN value AT TIME ZONE 'Asia/Baku';

-- The term a course run names: 'YYYY-YYYY/fall' or 'YYYY-YYYY/spring', or NULL when its year is
-- not two consecutive years or its semester is neither 1 (fall, payız) nor 2 (spring, yaz).
CREATE FUNCTION migration.term_key(edu_year text, semester integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN migration.clean_text(edu_year) ~ '^(19|20)[0-9]{2} ?[-/] ?(19|20)[0-9]{2}$'
     AND substring(migration.clean_text(edu_year) FROM '[0-9]{4}$')::integer
         = substring(migration.clean_text(edu_year) FROM '^[0-9]{4}')::integer + 1
     AND semester IN (1, 2)
    THEN substring(migration.clean_text(edu_year) FROM '^[0-9]{4}') || '-'
         || substring(migration.clean_text(edu_year) FROM '[0-9]{4}$') || '/'
         || CASE semester WHEN 1 THEN 'fall' ELSE 'spring' END
END;
