-- edu_v2, version 4: the value parsers read digits of other scripts. Legacy forms were typed on
-- Azerbaijani, Arabic and Japanese keyboards alike: '٣' (Arabic-Indic), '۳' (Persian) and '３'
-- (fullwidth) are the digit 3, and '８，５' is 8,5. Anything else still parses to NULL.

CREATE FUNCTION migration.ascii_digits(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN translate(value, '٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹０１２３４５６７８９，．٫',
                        '012345678901234567890123456789,..');

-- True when a value holds such a digit: the parse is a repair and is recorded.
CREATE FUNCTION migration.has_foreign_digits(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN value IS DISTINCT FROM migration.ascii_digits(value);

CREATE OR REPLACE FUNCTION migration.parse_decimal(value text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN replace(migration.clean_text(migration.ascii_digits(value)), ',', '.')
         ~ '^[+-]?[0-9]{1,9}(\.[0-9]{1,6})?$'
    THEN replace(migration.clean_text(migration.ascii_digits(value)), ',', '.')::numeric
END;

CREATE OR REPLACE FUNCTION migration.parse_legacy_date(value text) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN migration.clean_text(migration.ascii_digits(value)) ~ '^[0-9]{1,2}[./][0-9]{1,2}[./][0-9]{4}$'
    THEN migration.safe_date(
        split_part(translate(migration.clean_text(migration.ascii_digits(value)), '/', '.'), '.', 3)::integer,
        split_part(translate(migration.clean_text(migration.ascii_digits(value)), '/', '.'), '.', 2)::integer,
        split_part(translate(migration.clean_text(migration.ascii_digits(value)), '/', '.'), '.', 1)::integer)
    WHEN migration.clean_text(migration.ascii_digits(value)) ~ '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$'
    THEN migration.safe_date(
        split_part(migration.clean_text(migration.ascii_digits(value)), '-', 1)::integer,
        split_part(migration.clean_text(migration.ascii_digits(value)), '-', 2)::integer,
        split_part(migration.clean_text(migration.ascii_digits(value)), '-', 3)::integer)
END;

-- A status or other word of a closed list, compared case-insensitively in Azerbaijani too:
-- 'AKTİV' is 'aktiv' (the dotted capital İ lower-cases to i whatever the collation says).
CREATE FUNCTION migration.fold_word(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN lower(translate(migration.clean_text(value), 'İI_', 'ii '));
