-- edu_v2, version 15: which database is the system of record, and what edu_v2 keeps so that a
-- fallback can carry its own writes back to edu (docs/engine.md, "The direction of truth").

-- The history of the system of record. No row: edu (a migration in progress). A cutover adds
-- ('edu_v2', 'cutover'), a fallback ('edu', 'fallback'); an override of the rule is recorded too.
-- audit_mark is audit.log's last id when the row was added: the audited writes after it are the
-- applications' own (a phase writes one bulk event, never one per row).
CREATE TABLE migration.system_of_record (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    database    text NOT NULL CHECK (database IN ('edu', 'edu_v2')),
    event       text NOT NULL CHECK (event IN ('cutover', 'fallback', 'override')),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    audit_mark  bigint NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- A row the applications create on edu_v2 after the cutover gets its legacy id when it is
-- created: the next id above the legacy table's largest (the sequence is moved there by the
-- cutover), and the UUID a forward migration derives from that id. A fallback writes the row to
-- edu under that id, so that the next forward run gives it the same UUID. Rows created with an
-- id of the application's own choosing get a legacy id from the fallback instead (listed: a
-- forward run derives another UUID for them).
CREATE TABLE migration.created_rows (
    target_table text NOT NULL,
    target_id    uuid NOT NULL,
    source_table text NOT NULL,
    source_id    bigint NOT NULL,
    PRIMARY KEY (target_table, target_id),
    UNIQUE (source_table, source_id)
);

CREATE SEQUENCE migration.legacy_ids_users;
CREATE SEQUENCE migration.legacy_ids_persons;
CREATE SEQUENCE migration.legacy_ids_organizations;
CREATE SEQUENCE migration.legacy_ids_students;
CREATE SEQUENCE migration.legacy_ids_teachers;
CREATE SEQUENCE migration.legacy_ids_courses;
CREATE SEQUENCE migration.legacy_ids_course_students;
CREATE SEQUENCE migration.legacy_ids_grades;

-- The legacy table behind each business table whose ids derive from one legacy id, and the kind
-- its ids are derived under (migration.derive_id).
CREATE TABLE migration.legacy_tables (
    target_table text PRIMARY KEY,
    source_table text NOT NULL UNIQUE,
    id_kind      text NOT NULL
);
INSERT INTO migration.legacy_tables VALUES
    ('users', 'users', 'users'), ('persons', 'persons', 'persons'),
    ('organization_units', 'organizations', 'organization_units'),
    ('students', 'students', 'students'), ('staff_members', 'teachers', 'staff_members'),
    ('course_offerings', 'courses', 'course_offerings'),
    ('course_enrollments', 'course_students', 'course_enrollments'),
    ('grades', 'grades', 'grades');

-- The id of a new row: before any cutover (edu_v2 follows edu, and a sync would remove the row)
-- a random one; after it, the derived id of a new legacy id, recorded.
CREATE FUNCTION public.new_row_id(target text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = migration, pg_temp
AS $$
DECLARE
    legacy   migration.legacy_tables;
    legacy_id bigint;
    made     uuid;
BEGIN
    SELECT * INTO legacy FROM migration.legacy_tables WHERE target_table = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'new_row_id: % has no legacy table', target;
    END IF;
    IF coalesce((SELECT database FROM migration.system_of_record ORDER BY id DESC LIMIT 1), 'edu')
       <> 'edu_v2' THEN
        RETURN gen_random_uuid();
    END IF;
    legacy_id := nextval(format('migration.legacy_ids_%s', legacy.source_table)::regclass);
    made := md5((SELECT id_secret FROM migration.state) || '/' || legacy.id_kind || '/'
                || legacy_id)::uuid;
    INSERT INTO migration.created_rows VALUES (target, made, legacy.source_table, legacy_id);
    RETURN made;
END
$$;
REVOKE ALL ON FUNCTION public.new_row_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.new_row_id(text) TO edu_app;

ALTER TABLE users ALTER COLUMN id SET DEFAULT new_row_id('users');
ALTER TABLE persons ALTER COLUMN id SET DEFAULT new_row_id('persons');
ALTER TABLE organization_units ALTER COLUMN id SET DEFAULT new_row_id('organization_units');
ALTER TABLE students ALTER COLUMN id SET DEFAULT new_row_id('students');
ALTER TABLE staff_members ALTER COLUMN id SET DEFAULT new_row_id('staff_members');
ALTER TABLE course_offerings ALTER COLUMN id SET DEFAULT new_row_id('course_offerings');
ALTER TABLE course_enrollments ALTER COLUMN id SET DEFAULT new_row_id('course_enrollments');
ALTER TABLE grades ALTER COLUMN id SET DEFAULT new_row_id('grades');

-- What each fallback carried back: its rounds, window and the values edu cannot hold.
CREATE TABLE migration.fallback_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status      text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- What a fallback will write to edu: computed on edu_v2 round by round while the applications
-- still write, applied to edu in one transaction in the window. One row per edu_v2 row and the
-- legacy row it writes (a catalogue course writes every run of it); a round replaces the rows of
-- the edu_v2 rows it read again. `image` holds the legacy columns to set (all of them for a new
-- row), none for a deletion.
CREATE TABLE migration.fallback_images (
    target_table text NOT NULL,
    target_id    uuid NOT NULL,
    source_table text NOT NULL,
    source_id    bigint NOT NULL,
    action       text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    image        jsonb,
    -- written because a group rule joins this legacy row to the edu_v2 row that changed; the
    -- legacy row's own image wins over it
    closure      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (target_table, target_id, source_table, source_id)
);

-- Passwords set on edu_v2 (by an administrator, never by a login's rehash): a fallback carries
-- these hashes back, and lists them (an argon2 hash is one the legacy application cannot
-- verify). A rehash at login keeps the same password, so edu's legacy hash still verifies it and
-- is left in place.
CREATE TABLE migration.password_changes (
    user_id    uuid PRIMARY KEY,
    changed_at timestamptz NOT NULL
);

CREATE FUNCTION migration.note_password_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = migration, pg_temp
AS $$
BEGIN
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash
       AND coalesce(current_setting('auth.rehash', true), '') <> 'on' THEN
        INSERT INTO migration.password_changes (user_id, changed_at)
        VALUES (NEW.id, clock_timestamp())
        ON CONFLICT (user_id) DO UPDATE SET changed_at = excluded.changed_at;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION migration.note_password_change() FROM PUBLIC;

-- A phase's bulk load pauses it with the audit triggers (security/audit.py).
CREATE TRIGGER audit_password_change AFTER UPDATE OF password_hash ON users
    FOR EACH ROW EXECUTE FUNCTION migration.note_password_change();

-- The legacy id of an edu_v2 row: the crosswalk row whose derived id it is (of a merged
-- enrollment, the surviving legacy row), else the id it was created under. The id secret is in
-- the session (phases/session.py).
CREATE FUNCTION migration.legacy_id(target text, id uuid) RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT s.source_id FROM (
        SELECT c.source_id FROM migration.crosswalk c JOIN migration.legacy_tables l
               ON l.target_table = target AND c.source_table = l.source_table
        WHERE c.target_table = target AND c.target_id = id
          AND migration.derive_id(l.id_kind, c.source_id::text) = id
        UNION ALL
        SELECT r.source_id FROM migration.created_rows r
        WHERE r.target_table = target AND r.target_id = id
    ) s LIMIT 1
$$;

-- When edu_v2 last became the system of record (none before a cutover).
CREATE FUNCTION migration.cutover_at() RETURNS timestamptz
LANGUAGE sql STABLE
RETURN (SELECT max(at) FROM migration.system_of_record WHERE event = 'cutover');

-- The values a fallback found that edu cannot hold, per edu_v2 row and column, with the reason.
CREATE TABLE migration.fallback_losses (
    target_table text NOT NULL,
    target_id    uuid NOT NULL,
    column_name  text NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (target_table, target_id, column_name)
);
