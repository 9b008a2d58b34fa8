-- edu_v2, version 5: the application role, row-level security, audit trails, login functions.
--
-- Applications connect as a login role that is a member of edu_admin (and so of edu_app) and run
-- each transaction as `SET LOCAL ROLE edu_app` (edu_admin for an administrator) and
-- `SET LOCAL app.current_user_id = '<uuid>'`. The policies below decide what that user sees; no
-- application query needs a `WHERE user_id = …` of its own.
--
-- The migration runs as the role that owns edu_v2. RLS is FORCEd, so that role must bypass it
-- (a superuser, or a role with BYPASSRLS): otherwise the phases would see and write nothing.

DO $$
BEGIN
    IF NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'the role % cannot bypass row-level security', current_user
            USING HINT = 'apply the schema and migrate as a superuser or a role WITH BYPASSRLS';
    END IF;
END
$$;

-- Roles belong to the whole server, not to one database: several edu_v2 databases on a server
-- share them, and two of them may be created at the same moment.
--   edu_app    every application session: anonymous, students, teachers;
--   edu_admin  the sessions of administrators (the application switches to it for a user whose
--              role is admin). Its policies still check that role, so the switch alone grants
--              nothing; keeping the administrator's catch-all out of edu_app's policies keeps
--              those free of an OR that would turn every index scan into a full scan.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['edu_app', 'edu_admin'] LOOP
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN NOBYPASSRLS', name);
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created by a concurrent schema apply on another database
        END;
    END LOOP;
    BEGIN
        IF NOT pg_has_role('edu_admin', 'edu_app', 'MEMBER') THEN
            GRANT edu_app TO edu_admin;
        END IF;
        -- The role that applies the schema also serves the reference API, switching role per
        -- transaction.
        IF NOT pg_has_role(current_user, 'edu_admin', 'MEMBER') THEN
            EXECUTE format('GRANT edu_admin TO %I', current_user);
        END IF;
    EXCEPTION WHEN unique_violation THEN
        NULL;  -- granted by a concurrent schema apply
    END;
END
$$;

-- The user of the current transaction, as the application set it; NULL when none is set.
CREATE FUNCTION current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(current_setting('app.current_user_id', true), '')::uuid;

-- The helpers below read the tables that the policies protect. They run as the owner (SECURITY
-- DEFINER), who bypasses RLS, so a policy calling them never recurses into policies. Policies call
-- them as `(SELECT f())` (cast when an array, so that `= ANY` takes it as one value): an InitPlan,
-- evaluated once per statement instead of once per row, whose result can drive an index scan.

CREATE FUNCTION current_user_role() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT u.role FROM users u WHERE u.id = current_user_id() AND u.is_active);

CREATE FUNCTION is_admin() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN coalesce(current_user_role() = 'admin', false);

CREATE FUNCTION current_student_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT s.id FROM students s JOIN users u ON u.id = s.user_id
        WHERE s.user_id = current_user_id() AND u.is_active);

CREATE FUNCTION current_staff_id() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT m.id FROM staff_members m JOIN users u ON u.id = m.user_id
        WHERE m.user_id = current_user_id() AND u.is_active);

CREATE FUNCTION enrolled_offering_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(e.course_offering_id), '{}') FROM course_enrollments e
        WHERE e.student_id = current_student_id());

CREATE FUNCTION taught_offering_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(o.id), '{}') FROM course_offerings o
        WHERE o.instructor_id = current_staff_id());

CREATE FUNCTION taught_enrollment_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(e.id), '{}') FROM course_enrollments e
        WHERE e.course_offering_id = ANY (taught_offering_ids()));

CREATE FUNCTION visible_enrollment_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(e.id), '{}') FROM course_enrollments e
        WHERE e.student_id = current_student_id())
       || taught_enrollment_ids();

CREATE FUNCTION taught_assessment_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(a.id), '{}') FROM assessments a
        WHERE a.course_offering_id = ANY (taught_offering_ids()));

CREATE FUNCTION taught_student_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(DISTINCT e.student_id), '{}') FROM course_enrollments e
        WHERE e.course_offering_id = ANY (taught_offering_ids()));

CREATE FUNCTION taught_student_user_ids() RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN (SELECT coalesce(array_agg(s.user_id), '{}') FROM students s
        WHERE s.id = ANY (taught_student_ids()));

-- Privileges: edu_app reads the business tables (password hashes excepted: login goes through
-- the functions at the end of this file) and may write them; the policies decide which rows.
GRANT USAGE ON SCHEMA public TO edu_app;
GRANT SELECT (id, username, email, role, is_active, last_login_at, created_at, updated_at)
    ON users TO edu_app;
GRANT INSERT, UPDATE, DELETE ON users TO edu_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON persons, students, staff_members, organization_units, academic_terms, courses,
       course_offerings, course_enrollments, assessments, grades
    TO edu_app;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE persons ENABLE ROW LEVEL SECURITY;
ALTER TABLE students ENABLE ROW LEVEL SECURITY;
ALTER TABLE staff_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_units ENABLE ROW LEVEL SECURITY;
ALTER TABLE academic_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE courses ENABLE ROW LEVEL SECURITY;
ALTER TABLE course_offerings ENABLE ROW LEVEL SECURITY;
ALTER TABLE course_enrollments ENABLE ROW LEVEL SECURITY;
ALTER TABLE assessments ENABLE ROW LEVEL SECURITY;
ALTER TABLE grades ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE persons FORCE ROW LEVEL SECURITY;
ALTER TABLE students FORCE ROW LEVEL SECURITY;
ALTER TABLE staff_members FORCE ROW LEVEL SECURITY;
ALTER TABLE organization_units FORCE ROW LEVEL SECURITY;
ALTER TABLE academic_terms FORCE ROW LEVEL SECURITY;
ALTER TABLE courses FORCE ROW LEVEL SECURITY;
ALTER TABLE course_offerings FORCE ROW LEVEL SECURITY;
ALTER TABLE course_enrollments FORCE ROW LEVEL SECURITY;
ALTER TABLE assessments FORCE ROW LEVEL SECURITY;
ALTER TABLE grades FORCE ROW LEVEL SECURITY;

-- An administrator reads and writes everything.
CREATE POLICY admin_all ON users TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON persons TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON students TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON staff_members TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON organization_units TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON academic_terms TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON courses TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON course_offerings TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON course_enrollments TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON assessments TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));
CREATE POLICY admin_all ON grades TO edu_admin
    USING ((SELECT is_admin())) WITH CHECK ((SELECT is_admin()));

-- The public course catalogue: visible to everyone, signed in or not.
CREATE POLICY public_catalogue ON organization_units FOR SELECT TO edu_app USING (true);
CREATE POLICY public_catalogue ON academic_terms FOR SELECT TO edu_app USING (true);
CREATE POLICY public_catalogue ON courses FOR SELECT TO edu_app USING (true);

-- Everyone reads their own records.
CREATE POLICY own_record ON users FOR SELECT TO edu_app
    USING (id = (SELECT current_user_id()));
CREATE POLICY own_record ON persons FOR SELECT TO edu_app
    USING (user_id = (SELECT current_user_id()));
CREATE POLICY own_record ON students FOR SELECT TO edu_app
    USING (user_id = (SELECT current_user_id()));
CREATE POLICY own_record ON staff_members FOR SELECT TO edu_app
    USING (user_id = (SELECT current_user_id()));

-- A student: their enrollments, the offerings and assessments of those, and their marks.
CREATE POLICY student_own ON course_enrollments FOR SELECT TO edu_app
    USING (student_id = (SELECT current_student_id()));
CREATE POLICY student_enrolled ON course_offerings FOR SELECT TO edu_app
    USING (id = ANY ((SELECT enrolled_offering_ids())::uuid[]));
CREATE POLICY student_enrolled ON assessments FOR SELECT TO edu_app
    USING (course_offering_id = ANY ((SELECT enrolled_offering_ids())::uuid[]));

-- A teacher: the offerings they teach, their enrollments, assessments and marks, and the basic
-- records of the students enrolled in them.
CREATE POLICY teacher_taught ON course_offerings FOR SELECT TO edu_app
    USING (id = ANY ((SELECT taught_offering_ids())::uuid[]));
CREATE POLICY teacher_taught ON course_enrollments FOR SELECT TO edu_app
    USING (course_offering_id = ANY ((SELECT taught_offering_ids())::uuid[]));
CREATE POLICY teacher_taught ON assessments FOR SELECT TO edu_app
    USING (course_offering_id = ANY ((SELECT taught_offering_ids())::uuid[]));
CREATE POLICY teacher_students ON students FOR SELECT TO edu_app
    USING (id = ANY ((SELECT taught_student_ids())::uuid[]));
CREATE POLICY teacher_students ON persons FOR SELECT TO edu_app
    USING (user_id = ANY ((SELECT taught_student_user_ids())::uuid[]));
CREATE POLICY teacher_students ON users FOR SELECT TO edu_app
    USING (id = ANY ((SELECT taught_student_user_ids())::uuid[]));

-- Marks: a student and a teacher read those of the enrollments they see (a short list, so the
-- index on grades.enrollment_id serves it); a teacher writes marks in their own offerings only.
CREATE POLICY visible_marks ON grades FOR SELECT TO edu_app
    USING (enrollment_id = ANY ((SELECT visible_enrollment_ids())::uuid[]));
CREATE POLICY teacher_writes ON grades FOR INSERT TO edu_app
    WITH CHECK (enrollment_id = ANY ((SELECT taught_enrollment_ids())::uuid[])
                AND assessment_id = ANY ((SELECT taught_assessment_ids())::uuid[]));
CREATE POLICY teacher_updates ON grades FOR UPDATE TO edu_app
    USING (enrollment_id = ANY ((SELECT taught_enrollment_ids())::uuid[]))
    WITH CHECK (enrollment_id = ANY ((SELECT taught_enrollment_ids())::uuid[])
                AND assessment_id = ANY ((SELECT taught_assessment_ids())::uuid[]));
CREATE POLICY teacher_deletes ON grades FOR DELETE TO edu_app
    USING (enrollment_id = ANY ((SELECT taught_enrollment_ids())::uuid[]));

-- Audit trail: every row change of the people and marks tables, with the acting user. Written by
-- triggers running as the owner, so the application can add to the log but never edit it.
CREATE SCHEMA audit;

CREATE TABLE audit.log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name     text NOT NULL,
    row_id         uuid,
    operation      text NOT NULL
                   CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'MIGRATE', 'ROLLBACK')),
    old_values     jsonb,
    new_values     jsonb,
    acting_user_id uuid,
    database_user  text NOT NULL DEFAULT session_user,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((row_id IS NULL) = (operation IN ('MIGRATE', 'ROLLBACK')))
);
CREATE INDEX log_row_idx ON audit.log (table_name, row_id);
CREATE INDEX log_acting_user_idx ON audit.log (acting_user_id, at);

-- The trigger's arguments name columns kept out of the log (password hashes).
CREATE FUNCTION audit.record_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    hidden     text[] := coalesce(TG_ARGV::text[], '{}');
    old_values jsonb;
    new_values jsonb;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_values := to_jsonb(OLD) - hidden;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_values := to_jsonb(NEW) - hidden;
    END IF;
    INSERT INTO audit.log (table_name, row_id, operation, old_values, new_values, acting_user_id)
    VALUES (TG_TABLE_NAME, (coalesce(new_values, old_values) ->> 'id')::uuid, TG_OP,
            old_values, new_values, current_user_id());
    RETURN NULL;
END
$$;

-- Every trigger named audit_row_change is paused by a migration phase for its bulk load (which
-- records one MIGRATE event instead): keep the name.
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change('password_hash');
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON persons
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON students
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON staff_members
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON course_enrollments
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON grades
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();

-- Login. edu_app cannot read password hashes; these functions hand the login code exactly what
-- it needs. auth.credentials finds an account by username, case-insensitively (the unique index
-- on lower(username)).
CREATE SCHEMA auth;

CREATE FUNCTION auth.credentials(login text)
RETURNS TABLE (user_id uuid, password_hash text, password_algo text, is_active boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT u.id, u.password_hash, u.password_algo, u.is_active
    FROM users u WHERE lower(u.username) = lower(login)
$$;

-- A successful login: the time, and a new hash when the stored one is outdated. The new hash is
-- stored only if the old one is still in place, so a caller must have read it first.
CREATE FUNCTION auth.record_login(account uuid, verified_hash text, new_hash text,
                                  new_algo text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    UPDATE users
    SET last_login_at = now(),
        password_hash = coalesce(new_hash, password_hash),
        password_algo = CASE WHEN new_hash IS NULL THEN password_algo ELSE new_algo END,
        updated_at = CASE WHEN new_hash IS NULL THEN updated_at ELSE now() END
    WHERE id = account AND password_hash = verified_hash
$$;

REVOKE ALL ON SCHEMA auth, audit FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA auth FROM PUBLIC;
GRANT USAGE ON SCHEMA auth TO edu_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO edu_app;
