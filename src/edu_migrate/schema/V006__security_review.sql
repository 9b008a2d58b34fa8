-- edu_v2, version 6: what a security review found, closed.
--
--  * Request sessions (edu_app, edu_admin) can no longer read a password hash or change one:
--    the credential functions belong to edu_auth, a role only the login path holds, and
--    users.password_hash is not among the columns edu_app may update.
--  * A password change, a deactivation or a new role revokes the tokens issued before it.
--  * The SECURITY DEFINER helpers are executable by edu_app alone, not by PUBLIC.
--  * A teacher sees of their students only what teaching needs: name, student number, e-mail.
--  * The database refuses marks that do not hold together, for every role.
--  * Every business table is audited.
--  * The logins that `edu-migrate serve` creates keep their passwords in migration.api_logins,
--    which only the owner reads.

-- edu_auth: looks up and updates credentials. Only the API's login path holds it, through a
-- login role of its own; the sessions that serve requests never do.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edu_auth') THEN
        CREATE ROLE edu_auth NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created by a concurrent schema apply on another database
END
$$;

REVOKE ALL ON FUNCTION auth.credentials(text) FROM edu_app;
REVOKE ALL ON FUNCTION auth.record_login(uuid, text, text, text) FROM edu_app;
REVOKE USAGE ON SCHEMA auth FROM edu_app;
GRANT USAGE ON SCHEMA auth TO edu_auth;

-- Request sessions may change an account, but not its password: a password changes only
-- through a login that verified the old one (auth.record_login), or by the owner.
REVOKE UPDATE ON users FROM edu_app;
GRANT UPDATE (username, email, role, is_active, last_login_at, updated_at) ON users TO edu_app;

-- Token revocation: when an account's password, activity or role changes, the tokens issued
-- before are void (token_still_valid). A rehash at login is no change of password.
CREATE TABLE auth.credential_changes (
    user_id    uuid PRIMARY KEY,
    changed_at timestamptz NOT NULL
);

CREATE FUNCTION auth.note_credential_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    IF (NEW.password_hash IS DISTINCT FROM OLD.password_hash
            AND coalesce(current_setting('auth.rehash', true), '') <> 'on')
       OR (OLD.is_active AND NOT NEW.is_active)
       OR NEW.role IS DISTINCT FROM OLD.role THEN
        INSERT INTO auth.credential_changes (user_id, changed_at)
        VALUES (NEW.id, clock_timestamp())
        ON CONFLICT (user_id) DO UPDATE SET changed_at = excluded.changed_at;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER revoke_tokens AFTER UPDATE OF password_hash, is_active, role ON users
    FOR EACH ROW EXECUTE FUNCTION auth.note_credential_change();

-- Is a token issued at `issued_at` for the current user still good?
CREATE FUNCTION token_still_valid(issued_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
RETURN NOT EXISTS (SELECT FROM auth.credential_changes c
                   WHERE c.user_id = current_user_id() AND c.changed_at > issued_at);

-- A successful login: the time, and a new hash when the stored one is outdated, stored only if
-- the old one (which the caller verified) is still in place. The new hash is the same password,
-- so it revokes nothing.
CREATE OR REPLACE FUNCTION auth.record_login(account uuid, verified_hash text, new_hash text,
                                             new_algo text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM set_config('auth.rehash', 'on', true);
    UPDATE users
    SET last_login_at = now(),
        password_hash = coalesce(new_hash, password_hash),
        password_algo = CASE WHEN new_hash IS NULL THEN password_algo ELSE new_algo END,
        updated_at = CASE WHEN new_hash IS NULL THEN updated_at ELSE now() END
    WHERE id = account AND password_hash = verified_hash;
    PERFORM set_config('auth.rehash', '', true);
END
$$;

-- A teacher: no longer the whole person, user and student records of their students; the
-- directory below gives what teaching needs. It runs as its owner (who bypasses row-level
-- security) and so filters itself; security_barrier keeps a caller's conditions from running
-- before that filter.
DROP POLICY teacher_students ON students;
DROP POLICY teacher_students ON persons;
DROP POLICY teacher_students ON users;
DROP FUNCTION taught_student_user_ids();

CREATE VIEW taught_students WITH (security_barrier) AS
SELECT s.id, s.student_number, p.first_name, p.last_name, p.patronymic, u.email
FROM students s
JOIN persons p ON p.id = s.person_id
JOIN users u ON u.id = s.user_id
WHERE s.id = ANY ((SELECT taught_student_ids())::uuid[]);

-- Marks that hold together, whoever writes them: the enrollment and the assessment belong to
-- the same offering; the score is within the assessment's maximum; a teacher grades as
-- themselves (a mark they write without naming a grader is theirs), anyone else names the
-- offering's instructor or nobody; nothing is back-dated. The migration's bulk load pauses this
-- trigger with the audit trigger: the history it loads is dated in the past by nature.
CREATE FUNCTION marks_hold_together() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    enrollment_offering uuid;
    assessment_offering uuid;
    maximum             numeric;
    instructor          uuid;
    acting_staff        uuid := current_staff_id();
BEGIN
    SELECT e.course_offering_id INTO enrollment_offering
    FROM course_enrollments e WHERE e.id = NEW.enrollment_id;
    SELECT a.course_offering_id, a.max_score, o.instructor_id
    INTO assessment_offering, maximum, instructor
    FROM assessments a JOIN course_offerings o ON o.id = a.course_offering_id
    WHERE a.id = NEW.assessment_id;
    IF enrollment_offering IS DISTINCT FROM assessment_offering THEN
        RAISE EXCEPTION 'a mark must pair an enrollment and an assessment of the same offering'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.score > maximum THEN
        RAISE EXCEPTION 'the score % exceeds the assessment''s maximum of %', NEW.score, maximum
            USING ERRCODE = 'check_violation';
    END IF;
    IF acting_staff IS NOT NULL THEN
        IF NEW.graded_by IS NULL
           OR (TG_OP = 'UPDATE' AND NEW.graded_by IS NOT DISTINCT FROM OLD.graded_by) THEN
            NEW.graded_by := acting_staff;
        ELSIF NEW.graded_by IS DISTINCT FROM acting_staff THEN
            RAISE EXCEPTION 'a teacher records marks as themselves (graded_by)'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.graded_by IS NOT NULL AND NEW.graded_by IS DISTINCT FROM instructor
          AND (TG_OP = 'INSERT' OR NEW.graded_by IS DISTINCT FROM OLD.graded_by) THEN
        RAISE EXCEPTION 'graded_by must be the offering''s instructor'
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.created_at < now() - interval '5 minutes'
           OR NEW.created_at > clock_timestamp() + interval '5 minutes' THEN
            RAISE EXCEPTION 'a new mark is created now (created_at)'
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'created_at of a mark does not change' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.graded_on IS DISTINCT FROM current_date
       AND (TG_OP = 'INSERT' OR NEW.graded_on IS DISTINCT FROM OLD.graded_on)
       AND NEW.graded_on IS NOT NULL THEN
        RAISE EXCEPTION 'a mark is graded today (graded_on)' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER marks_hold_together BEFORE INSERT OR UPDATE ON grades
    FOR EACH ROW EXECUTE FUNCTION marks_hold_together();

-- Audit every business table: who teaches an offering decides who reads and writes its marks,
-- an assessment's maximum bounds them, and the catalogue and terms place them.
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON course_offerings
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON assessments
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON courses
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON organization_units
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();
CREATE TRIGGER audit_row_change AFTER INSERT OR UPDATE OR DELETE ON academic_terms
    FOR EACH ROW EXECUTE FUNCTION audit.record_row_change();

-- The passwords of the login roles `edu-migrate serve` creates for this database (see
-- edu_migrate.web.logins). The migration schema is the owner's alone.
CREATE TABLE migration.api_logins (
    role_name  text PRIMARY KEY,
    password   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No SECURITY DEFINER function is PUBLIC's: each is granted to the roles that call it.
DO $$
DECLARE
    helper regprocedure;
BEGIN
    FOR helper IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.prosecdef AND p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace,
                                                 'audit'::regnamespace)
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', helper);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION current_user_role(), is_admin(), current_student_id(),
    current_staff_id(), enrolled_offering_ids(), taught_offering_ids(), taught_enrollment_ids(),
    visible_enrollment_ids(), taught_assessment_ids(), taught_student_ids(),
    token_still_valid(timestamptz)
    TO edu_app;
GRANT EXECUTE ON FUNCTION auth.credentials(text), auth.record_login(uuid, text, text, text)
    TO edu_auth;
GRANT SELECT ON taught_students TO edu_app;
