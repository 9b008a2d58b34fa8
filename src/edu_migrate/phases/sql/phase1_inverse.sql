-- Phase 1's inverse: users and persons on edu_v2 back into legacy rows (docs/engine.md, "The
-- direction of truth"). Each statement reads the rows of reverse_delta (the edu_v2 rows the
-- applications wrote since the cutover, with their image at the cutover) and adds one legacy
-- row image to round_images: the legacy columns whose edu_v2 value changed, in the form the
-- forward rules (phase1.sql) read back to the same value; every column for a new row; nothing
-- for a deletion. Times go back into Baku local time (migration.baku_time's inverse).

-- name: invert_users
-- A password is carried back only when it was set on edu_v2 (migration.password_changes) or
-- the account is new: a login's rehash keeps the password, and edu's legacy hash verifies it.
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'users', d.legacy_id,
       CASE WHEN u.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN u.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('username', to_jsonb(u.username), b.username IS DISTINCT FROM u.username),
               ('email', to_jsonb(u.email), b.email IS DISTINCT FROM u.email),
               ('password', to_jsonb(u.password_hash), EXISTS (
                    SELECT 1 FROM migration.password_changes p
                    WHERE p.user_id = u.id AND p.changed_at > migration.cutover_at())),
               ('user_type', to_jsonb(CASE u.role WHEN 'student' THEN 1 WHEN 'teacher' THEN 2
                                                  WHEN 'admin' THEN 3 WHEN 'staff' THEN 4 END),
                b.role IS DISTINCT FROM u.role),
               ('is_active', to_jsonb(u.is_active::integer), b.is_active IS DISTINCT FROM u.is_active),
               ('last_login', to_jsonb(u.last_login_at AT TIME ZONE 'Asia/Baku'),
                b.last_login_at IS DISTINCT FROM u.last_login_at),
               ('created_at', to_jsonb(u.created_at AT TIME ZONE 'Asia/Baku'),
                b.created_at IS DISTINCT FROM u.created_at),
               ('updated_at', to_jsonb(u.updated_at AT TIME ZONE 'Asia/Baku'),
                b.updated_at IS DISTINCT FROM u.updated_at)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN users u ON u.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::users, d.before) b ON true
WHERE d.table_name = 'users' AND d.legacy_id IS NOT NULL;

-- name: invert_persons
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'persons', d.legacy_id,
       CASE WHEN p.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN p.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('user_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                     WHERE k.target_table = 'users'
                                       AND k.target_id = p.user_id LIMIT 1)),
                b.user_id IS DISTINCT FROM p.user_id),
               ('firstname', to_jsonb(p.first_name), b.first_name IS DISTINCT FROM p.first_name),
               ('lastname', to_jsonb(p.last_name), b.last_name IS DISTINCT FROM p.last_name),
               ('patronymic', to_jsonb(p.patronymic), b.patronymic IS DISTINCT FROM p.patronymic),
               ('birthdate', to_jsonb(to_char(p.birth_date, 'YYYY-MM-DD')),
                b.birth_date IS DISTINCT FROM p.birth_date),
               ('gender', to_jsonb(p.gender), b.gender IS DISTINCT FROM p.gender),
               ('pin', to_jsonb(p.pin), b.pin IS DISTINCT FROM p.pin),
               ('phone', to_jsonb(p.phone), b.phone IS DISTINCT FROM p.phone),
               ('address', to_jsonb(p.address), b.address IS DISTINCT FROM p.address),
               ('created_at', to_jsonb(p.created_at AT TIME ZONE 'Asia/Baku'),
                b.created_at IS DISTINCT FROM p.created_at)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN persons p ON p.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::persons, d.before) b ON true
WHERE d.table_name = 'persons' AND d.legacy_id IS NOT NULL;

-- name: close_username_and_email_groups
-- A username and an e-mail are decided for a group of legacy rows at once (phase1.sql: the
-- oldest account keeps a name, a later one is renamed '<name>.<id>' or loses its e-mail). When
-- an account's name or e-mail changes on edu_v2, or the account is deleted or created, the
-- forward rule would decide its old and its new group afresh: every other account of those
-- groups takes its edu_v2 name and e-mail into edu as well, so that it decides as edu_v2 holds.
-- These images belong to the account that changed (`closure`): an account's own image wins.
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image,
                          closure)
SELECT DISTINCT ON (d.row_id, m.id) d.table_name, d.row_id, 'users', m.id, 'update',
       jsonb_build_object('username', v.username, 'email', v.email), true
FROM reverse_delta d
LEFT JOIN users u ON u.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::users, d.before) b ON true
LEFT JOIN stage.users own ON own.id = d.legacy_id
JOIN stage.users m
  ON m.id IS DISTINCT FROM d.legacy_id
 AND (lower(migration.clean_text(m.username)) IN (lower(migration.clean_text(own.username)),
                                                  lower(b.username), lower(u.username))
      OR lower(migration.clean_text(m.email)) IN (lower(migration.clean_text(own.email)),
                                                  b.email, u.email))
JOIN migration.crosswalk_users x ON x.source_id = m.id
JOIN users v ON v.id = x.target_id
WHERE d.table_name = 'users' AND d.legacy_id IS NOT NULL
  AND (u.id IS NULL OR d.created OR b.username IS DISTINCT FROM u.username
       OR b.email IS DISTINCT FROM u.email);
