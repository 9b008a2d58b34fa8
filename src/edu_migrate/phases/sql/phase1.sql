-- Phase 1: users and persons.
-- Rules (docs/dirty-data.md lists them all): text trimmed and white space collapsed (no-break
-- spaces too), recorded for usernames and names; e-mails trimmed and lower-cased, blank ones
-- stored as none, invalid ones dropped, all recorded; a username taken by an older account
-- (case-insensitively, after trimming) is renamed '<name>.<legacy id>' and an e-mail taken by an
-- older account is dropped, recorded: no account is lost to a duplicate. Birth dates in the
-- three legacy formats (digits of any script); one that does not exist, lies after the as-of
-- day or on or before 1900-01-01 is dropped and recorded; gender M/F, K/Q (kişi/qadın), Cyrillic М/Ж (мужской/женский), any case,
-- else dropped and recorded; phones normalised to E.164 by `phonenumbers`, invalid ones dropped
-- and recorded. A row that cannot be migrated truthfully (no username, an unknown password
-- scheme or user_type, no user, a blank name) goes to migration.rejected_rows, whole; of a
-- user's persons that remain, the lowest id is the user's, the others are set aside. A missing
-- timestamp is the as-of time (migration.as_of()), recorded.
-- The rules read scoped_users and scoped_persons: every staged row in a full run, and in a sync
-- the rows phase1_scope.sql puts in scope, each with its whole group.

-- name: found_users
-- say: Found {n} users to migrate
SELECT count(*) FROM scoped_users;

-- name: prepare_users
CREATE TEMP TABLE prep_users ON COMMIT DROP AS
WITH parsed AS (
    SELECT s.id AS source_id,
           migration.derive_id('users', s.id::text) AS id,
           migration.clean_text(s.username) AS username,
           lower(migration.clean_text(s.email)) AS email,
           btrim(s.password) AS password_hash,
           CASE WHEN btrim(s.password) ~ '^\$2[abxy]\$[0-9]{2}\$[./A-Za-z0-9]{53}$' THEN 'bcrypt'
                WHEN btrim(s.password) ~ '^[0-9a-fA-F]{32}$' THEN 'md5'
                -- set on edu_v2 and carried back by a fallback (phase1_inverse.sql)
                WHEN btrim(s.password) ~ '^\$argon2(id|i|d)\$' THEN 'argon2' END AS password_algo,
           CASE s.user_type WHEN 1 THEN 'student' WHEN 2 THEN 'teacher' WHEN 3 THEN 'admin'
                            WHEN 4 THEN 'staff' END AS role,
           s.user_type, s.is_active, s.last_login, s.created_at, s.updated_at,
           s.password IS DISTINCT FROM btrim(s.password)
               OR btrim(s.password) ~ '^[0-9a-f]*[A-F][0-9a-fA-F]*$' AS password_rewritten,
           to_jsonb(s) - 'password' AS legacy_row
    FROM scoped_users s
)
SELECT p.*,
       CASE WHEN p.username IS NULL THEN 'blank username'
            WHEN p.password_algo IS NULL THEN 'unrecognised value: password is not an MD5, bcrypt or argon2 hash'
            WHEN p.role IS NULL THEN 'unrecognised value: user_type'
            WHEN p.is_active IS NULL OR p.is_active NOT IN (0, 1) THEN 'unrecognised value: is_active'
       END AS reject_reason,
       CASE WHEN p.email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' THEN p.email
       END AS valid_email
FROM parsed p;

-- name: reject_users
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'users', source_id, reject_reason, legacy_row, 1
FROM prep_users WHERE reject_reason IS NOT NULL;

-- name: rename_duplicate_usernames
-- The oldest account keeps the name; later ones get '<name>.<legacy id>'.
CREATE TEMP TABLE final_users ON COMMIT DROP AS
SELECT u.*,
       CASE WHEN row_number() OVER (PARTITION BY lower(u.username) ORDER BY u.source_id) = 1
            THEN u.username ELSE u.username || '.' || u.source_id END AS final_username,
       CASE WHEN u.valid_email IS NOT NULL
             AND row_number() OVER (PARTITION BY u.valid_email ORDER BY u.source_id) = 1
            THEN u.valid_email END AS final_email
FROM prep_users u WHERE u.reject_reason IS NULL;

-- name: settle_username_collisions
-- A renamed account can still meet an existing name ('ali.7' beside 'Ali' number 7): append the
-- legacy id again until every name is unique case-insensitively. No account is dropped.
DO $$
BEGIN
    LOOP
        UPDATE final_users f SET final_username = f.final_username || '.' || f.source_id
        FROM (SELECT source_id, row_number() OVER (PARTITION BY lower(final_username)
                  ORDER BY final_username = username DESC, source_id) AS n
              FROM final_users) d
        WHERE d.source_id = f.source_id AND d.n > 1;
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;

-- name: record_user_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'users', source_id, 'username', legacy_row ->> 'username', final_username,
       CASE WHEN final_username <> username THEN 'username taken by an older account: renamed'
            ELSE 'white space trimmed' END, 1
FROM final_users WHERE final_username IS DISTINCT FROM legacy_row ->> 'username'
UNION ALL
SELECT 'users', source_id, 'email', legacy_row ->> 'email', final_email,
       CASE WHEN email IS NULL THEN 'blank: stored as no e-mail'
            WHEN valid_email IS NULL THEN 'not an e-mail address: dropped'
            WHEN final_email IS NULL THEN 'e-mail used by an older account: dropped'
            ELSE 'trimmed and lower-cased' END, 1
FROM final_users WHERE final_email IS DISTINCT FROM legacy_row ->> 'email'
                   AND legacy_row ->> 'email' IS NOT NULL
UNION ALL
-- A hash is never shown, not even in a repair: the row says only that it was rewritten.
SELECT 'users', source_id, 'password', NULL, NULL,
       'hash trimmed or lower-cased (values not shown)', 1
FROM final_users WHERE password_rewritten
UNION ALL
SELECT 'users', source_id, 'created_at', NULL,
       coalesce(updated_at, migration.as_of() AT TIME ZONE 'Asia/Baku')::text,
       CASE WHEN updated_at IS NOT NULL THEN 'missing: taken from updated_at'
            ELSE 'missing: filled with the as-of time' END, 1
FROM final_users WHERE created_at IS NULL
UNION ALL
SELECT 'users', source_id, 'updated_at', NULL,
       coalesce(created_at, migration.as_of() AT TIME ZONE 'Asia/Baku')::text,
       CASE WHEN created_at IS NOT NULL THEN 'missing: taken from created_at'
            ELSE 'missing: filled with the as-of time' END, 1
FROM final_users WHERE updated_at IS NULL;

-- name: migrate_users
-- say: ✓ Migrated {n} users successfully
INSERT INTO users (id, username, email, password_hash, password_algo, role, is_active,
                   last_login_at, created_at, updated_at)
SELECT id, final_username, final_email,
       CASE WHEN password_algo = 'md5' THEN lower(password_hash) ELSE password_hash END,
       password_algo, role, is_active = 1, migration.baku_time(last_login),
       coalesce(migration.baku_time(created_at), migration.baku_time(updated_at), migration.as_of()),
       coalesce(migration.baku_time(updated_at), migration.baku_time(created_at), migration.as_of())
FROM final_users;

-- name: crosswalk_users
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_users (source_table, source_id, target_table, target_id)
SELECT 'users', source_id, 'users', id FROM final_users;

-- name: persons_header
-- say: \nMIGRATING PERSONS...
SELECT 0;

-- name: found_persons
-- say: Found {n} persons to migrate
SELECT count(*) FROM scoped_persons;

-- name: prepare_persons
CREATE TEMP TABLE prep_persons ON COMMIT DROP AS
WITH parsed AS (
    SELECT s.id AS source_id,
           migration.derive_id('persons', s.id::text) AS id,
           u.id AS user_id,
           (SELECT r.source_id FROM migration.rejected_rows r
             WHERE r.source_table = 'users' AND r.source_id = s.user_id) AS rejected_user,
           migration.clean_text(s.firstname) AS first_name,
           migration.clean_text(s.lastname) AS last_name,
           migration.clean_text(s.patronymic) AS patronymic,
           migration.parse_legacy_date(s.birthdate) AS birth_date,
           CASE upper(migration.clean_text(s.gender)) WHEN 'M' THEN 'M' WHEN 'K' THEN 'M'
                WHEN 'F' THEN 'F' WHEN 'Q' THEN 'F' WHEN 'М' THEN 'M' WHEN 'Ж' THEN 'F'
           END AS gender,
           upper(migration.clean_text(s.pin)) AS pin,
           ph.e164 AS phone,
           migration.clean_text(s.address) AS address,
           s.created_at,
           to_jsonb(s) AS legacy_row
    FROM scoped_persons s
    LEFT JOIN final_users u ON u.source_id = s.user_id
    LEFT JOIN stage.phone_numbers ph ON ph.raw = s.phone
)
SELECT p.*,
       CASE WHEN p.user_id IS NULL AND p.rejected_user IS NOT NULL THEN 'user set aside'
            WHEN p.user_id IS NULL THEN 'user missing'
            WHEN p.first_name IS NULL OR p.last_name IS NULL THEN 'blank name'
            -- ranked among the persons no rule above sets aside
            WHEN row_number() OVER (PARTITION BY p.user_id,
                     p.user_id IS NULL OR p.first_name IS NULL OR p.last_name IS NULL
                     ORDER BY p.source_id) > 1
                THEN 'second person for the same user'
       END AS reject_reason
FROM parsed p;

-- name: reject_persons
INSERT INTO migration.rejected_rows (source_table, source_id, reason, detail, phase)
SELECT 'persons', source_id, reject_reason, legacy_row, 1
FROM prep_persons WHERE reject_reason IS NOT NULL;

-- name: record_person_repairs
INSERT INTO migration.repairs (source_table, source_id, column_name, old_value, new_value, rule, phase)
SELECT 'persons', source_id, d.column_name, d.old_value, d.new_value,
       CASE WHEN d.new_value IS NULL THEN 'blank: stored as none' ELSE 'white space trimmed' END, 1
FROM prep_persons
CROSS JOIN LATERAL (VALUES
    ('firstname', legacy_row ->> 'firstname', first_name),
    ('lastname', legacy_row ->> 'lastname', last_name),
    ('patronymic', legacy_row ->> 'patronymic', patronymic),
    ('address', legacy_row ->> 'address', address)
) d (column_name, old_value, new_value)
WHERE reject_reason IS NULL AND d.new_value IS DISTINCT FROM d.old_value
UNION ALL
-- (phase1_scope.sql finds the persons an as-of time moved on reaches by the rule 'in the future:
-- dropped': its text is read there)
SELECT 'persons', source_id, 'birthdate', legacy_row ->> 'birthdate', NULL,
       CASE WHEN birth_date IS NULL THEN 'not a date: dropped'
            WHEN birth_date <= DATE '1900-01-01' THEN 'on or before 1900-01-01: dropped'
            ELSE 'in the future: dropped' END, 1
FROM prep_persons
WHERE reject_reason IS NULL AND migration.clean_text(legacy_row ->> 'birthdate') IS NOT NULL
  AND (birth_date IS NULL OR birth_date > migration.as_of_date()
       OR birth_date <= DATE '1900-01-01')
UNION ALL
SELECT 'persons', source_id, 'gender', legacy_row ->> 'gender', NULL,
       'unrecognised value: dropped', 1
FROM prep_persons
WHERE reject_reason IS NULL AND gender IS NULL
  AND migration.clean_text(legacy_row ->> 'gender') IS NOT NULL
UNION ALL
SELECT 'persons', source_id, 'phone', legacy_row ->> 'phone', NULL,
       'not a valid phone number: dropped', 1
FROM prep_persons
WHERE reject_reason IS NULL AND phone IS NULL
  AND migration.clean_text(legacy_row ->> 'phone') IS NOT NULL
UNION ALL
SELECT 'persons', source_id, 'pin', legacy_row ->> 'pin', NULL,
       'not a 7-character FİN: dropped', 1
FROM prep_persons
WHERE reject_reason IS NULL AND pin !~ '^[0-9A-Z]{7}$'
UNION ALL
SELECT 'persons', source_id, 'pin', legacy_row ->> 'pin', pin, 'trimmed and upper-cased', 1
FROM prep_persons
WHERE reject_reason IS NULL AND pin ~ '^[0-9A-Z]{7}$' AND pin <> legacy_row ->> 'pin'
UNION ALL
SELECT 'persons', source_id, 'created_at', NULL,
       (migration.as_of() AT TIME ZONE 'Asia/Baku')::text, 'missing: filled with the as-of time', 1
FROM prep_persons WHERE reject_reason IS NULL AND created_at IS NULL;

-- name: migrate_persons
-- say: ✓ Migrated {n} persons successfully
INSERT INTO persons (id, user_id, first_name, last_name, patronymic, birth_date, gender, pin,
                     phone, address, created_at)
SELECT id, user_id, first_name, last_name, patronymic,
       CASE WHEN birth_date > DATE '1900-01-01' AND birth_date <= migration.as_of_date()
            THEN birth_date END,
       gender, CASE WHEN pin ~ '^[0-9A-Z]{7}$' THEN pin END, phone, address,
       coalesce(migration.baku_time(created_at), migration.as_of())
FROM prep_persons WHERE reject_reason IS NULL;

-- name: crosswalk_persons
-- into the partition: its default records the source table (runner.source_default_statements)
INSERT INTO migration.crosswalk_persons (source_table, source_id, target_table, target_id)
SELECT 'persons', source_id, 'persons', id FROM prep_persons WHERE reject_reason IS NULL;
