-- The security grants of an edu_v2 database, whole and idempotent. `schema apply` runs it after
-- the versions, and every restore of an edu_v2 dump runs it again: a restore with
-- --no-privileges (or of a dump into another database) brings back the tables and functions
-- without their grants, and a function nobody granted is PUBLIC's to execute. Runs as the
-- owner of the database.

-- Only the roles that need it connect: the owner, edu_app (and through it edu_admin and the
-- API's request login) and edu_auth (the API's password-check login). A new database grants
-- CONNECT and TEMPORARY to PUBLIC; this one does not.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO edu_app, edu_auth', current_database());
END
$$;

REVOKE ALL ON SCHEMA auth, audit, migration FROM PUBLIC;

-- No SECURITY DEFINER function, and nothing of auth, is PUBLIC's: each is granted below to
-- the roles that call it.
DO $$
DECLARE
    helper regprocedure;
BEGIN
    FOR helper IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE (p.prosecdef AND p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace,
                                                  'audit'::regnamespace,
                                                  'migration'::regnamespace))
           OR p.pronamespace = 'auth'::regnamespace
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', helper);
    END LOOP;
END
$$;

-- edu_app: the business tables, row by row as the policies allow; of users never the password
-- hash, neither to read nor to write.
GRANT USAGE ON SCHEMA public TO edu_app;
REVOKE ALL ON users FROM edu_app;
GRANT SELECT (id, username, email, role, is_active, last_login_at, created_at, updated_at)
    ON users TO edu_app;
GRANT INSERT (id, username, email, role, is_active, last_login_at, created_at, updated_at)
    ON users TO edu_app;
GRANT UPDATE (username, email, role, is_active, last_login_at, updated_at) ON users TO edu_app;
GRANT DELETE ON users TO edu_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON persons, students, staff_members, organization_units, academic_terms, courses,
       course_offerings, course_enrollments, assessments
    TO edu_app;
-- grades.legacy_id is the marks' crosswalk (schema V026): only the tool writes it, and a mark's
-- id, derived from it, is never changed. A mark moved to another legacy id, or given another
-- id, would make a fallback write the wrong legacy row, or lose it.
REVOKE ALL ON grades FROM edu_app;
GRANT SELECT, DELETE ON grades TO edu_app;
GRANT INSERT (id, enrollment_id, assessment_id, score, is_absent, graded_on, graded_by,
              created_at) ON grades TO edu_app;
GRANT UPDATE (enrollment_id, assessment_id, score, is_absent, graded_on, graded_by, created_at)
    ON grades TO edu_app;
GRANT SELECT ON taught_students TO edu_app;
GRANT EXECUTE ON FUNCTION current_user_role(), is_admin(), current_student_id(),
    current_staff_id(), enrolled_offering_ids(), taught_offering_ids(), taught_enrollment_ids(),
    visible_enrollment_ids(), taught_assessment_ids(), taught_student_ids(),
    token_still_valid(timestamptz), token_still_valid(timestamptz, uuid),
    revoke_token(uuid, timestamptz), new_row_id(text)
    TO edu_app;

-- edu_auth: look up an account's hash, record a verified login. Nothing else.
GRANT USAGE ON SCHEMA auth TO edu_auth;
GRANT EXECUTE ON FUNCTION auth.credentials(text), auth.record_login(uuid, text, text, text)
    TO edu_auth;
