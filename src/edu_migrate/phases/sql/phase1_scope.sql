-- Phase 1 in a sync: which legacy users and persons it derives again (phases/sync.py). The rules
-- are phase1.sql's, run over scoped_users and scoped_persons, which hold the rows named here;
-- every other user and person would come out exactly as it is, so it is left alone.
--
-- A row is in scope when it changed (delta_<table>, old_<table>: the sync built them), when the
-- as-of time moved and its outcome reads it (a missing timestamp is the as-of time; a birth date
-- after the as-of day is dropped), or when it shares a group with a row in scope:
-- - usernames are decided per group: a taken name is renamed '<name>.<legacy id>', and again
--   until unique, so two accounts' final names can only meet when their names, lower-cased and
--   stripped of every trailing '.<digits>', are equal. That stripped name is the group.
-- - e-mails per address, lower-cased (the oldest account keeps it);
-- - persons per user (of a user's persons the lowest id is the user's), and a person reads its
--   user's outcome, so a person in scope brings its user, and a user all its persons.
-- A group is taken whole with its old members (old_<table>) and new ones, and the closure is
-- repeated until it adds nobody (phases/sync.py: grow_* until no row is added).

-- name: user_group_keys
CREATE TEMP TABLE user_group_keys ON COMMIT DROP AS
SELECT id,
       regexp_replace(lower(migration.clean_text(username)), '(\.-?[0-9]+)+$', '') AS name_key,
       lower(migration.clean_text(email)) AS email_key
FROM stage.users;

-- name: user_group_keys_by_name
CREATE INDEX ON user_group_keys (name_key);

-- name: user_group_keys_by_email
CREATE INDEX ON user_group_keys (email_key);

-- name: old_user_group_keys
-- The groups the changed users left.
CREATE TEMP TABLE old_user_group_keys ON COMMIT DROP AS
SELECT regexp_replace(lower(migration.clean_text(username)), '(\.-?[0-9]+)+$', '') AS name_key,
       lower(migration.clean_text(email)) AS email_key
FROM old_users;

-- name: scope_users
CREATE TEMP TABLE scope_users (id bigint PRIMARY KEY) ON COMMIT DROP;

-- name: scope_persons
CREATE TEMP TABLE scope_persons (id bigint PRIMARY KEY) ON COMMIT DROP;

-- name: seed_users
-- (SELECT …) asks once, and when the as-of time stayed, the scan is not made at all.
INSERT INTO scope_users (id)
SELECT id FROM delta_users
UNION
SELECT id FROM stage.users
WHERE (SELECT migration.as_of_moved()) AND (created_at IS NULL OR updated_at IS NULL);

-- name: seed_persons
-- A birth date after the as-of day is dropped. When the as-of day moves, the persons whose birth
-- date lies between the two days flip: moving on, those the last derivation dropped as in the
-- future (their repair says so); moving back, those it kept with a birth date after the earlier
-- day. Both are read from what phase 1 derived before, which is what a full run at the earlier
-- as-of time derives for every row that did not change (the changed ones are in scope anyway):
-- parsing every staged birth date again would cost more than the rest of the phase.
INSERT INTO scope_persons (id)
SELECT id FROM delta_persons
UNION
SELECT id FROM stage.persons WHERE (SELECT migration.as_of_moved()) AND created_at IS NULL
UNION
SELECT x.source_id FROM persons p JOIN migration.crosswalk_persons x ON x.target_id = p.id
WHERE (SELECT migration.as_of_moved())
  AND p.birth_date > (SELECT (least(migration.previous_as_of(), migration.as_of())
                              AT TIME ZONE 'Asia/Baku')::date)
UNION
SELECT r.source_id FROM migration.repairs r
WHERE (SELECT migration.as_of_moved()) AND r.phase = 1 AND r.source_table = 'persons'
  AND r.column_name = 'birthdate' AND r.rule = 'in the future: dropped';

-- name: grow_users_by_group
INSERT INTO scope_users (id)
SELECT k.id FROM user_group_keys k
WHERE k.name_key IN (SELECT g.name_key FROM user_group_keys g JOIN scope_users s USING (id)
                     UNION SELECT name_key FROM old_user_group_keys)
   OR k.email_key IN (SELECT g.email_key FROM user_group_keys g JOIN scope_users s USING (id)
                      UNION SELECT email_key FROM old_user_group_keys)
ON CONFLICT DO NOTHING;

-- name: grow_persons_by_user
-- The persons of a user in scope, and those that were its persons.
INSERT INTO scope_persons (id)
SELECT p.id FROM stage.persons p JOIN scope_users s ON s.id = p.user_id
UNION
SELECT o.id FROM old_persons o JOIN scope_users s ON s.id = o.user_id
ON CONFLICT DO NOTHING;

-- name: grow_users_by_person
-- A person's user, and the user it had: both users' persons are ranked again.
INSERT INTO scope_users (id)
SELECT p.user_id FROM stage.persons p JOIN scope_persons s USING (id) WHERE p.user_id IS NOT NULL
UNION
SELECT o.user_id FROM old_persons o WHERE o.user_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- name: scope_keys_users
-- The edu_v2 rows in scope, by the ids the rules derive (phase1.sql): those the rules may write
-- again, delete or leave.
CREATE TEMP TABLE scope_keys_users ON COMMIT DROP AS
SELECT migration.derive_id('users', id::text) AS id FROM scope_users;

-- name: scope_keys_persons
CREATE TEMP TABLE scope_keys_persons ON COMMIT DROP AS
SELECT migration.derive_id('persons', id::text) AS id FROM scope_persons;

-- name: scope_records
-- The legacy rows in scope as phase 1's records name them.
CREATE TEMP TABLE scope_records ON COMMIT DROP AS
SELECT 'users'::text AS source_table, id AS source_id FROM scope_users
UNION ALL
SELECT 'persons', id FROM scope_persons;

-- name: clear_records_in_scope
-- What phase 1 decided of the rows in scope: decided again by its rules.
WITH crosswalk_users AS (
    DELETE FROM migration.crosswalk_users x USING scope_users s
    WHERE x.source_id = s.id RETURNING 1
), crosswalk_persons AS (
    DELETE FROM migration.crosswalk_persons x USING scope_persons s
    WHERE x.source_id = s.id RETURNING 1
), rejected AS (
    DELETE FROM migration.rejected_rows r USING scope_records s
    WHERE r.phase = 1 AND r.source_table = s.source_table AND r.source_id = s.source_id
    RETURNING 1
), repaired AS (
    DELETE FROM migration.repairs r USING scope_records s
    WHERE r.phase = 1 AND r.source_table = s.source_table AND r.source_id = s.source_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM crosswalk_users) + (SELECT count(*) FROM crosswalk_persons)
     + (SELECT count(*) FROM rejected) + (SELECT count(*) FROM repaired);
