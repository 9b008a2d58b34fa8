-- edu_v2, version 1: the business tables, the migration's bookkeeping.
-- Keys are UUIDs derived from a secret (see migration.derive_id); legacy integer ids live only in
-- migration.crosswalk. Secondary indexes are in V002, so that bulk loads can drop and rebuild them.

CREATE SCHEMA IF NOT EXISTS migration;

CREATE TABLE migration.state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id_secret      text NOT NULL CHECK (length(id_secret) >= 32),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE migration.phase_runs (
    phase          smallint PRIMARY KEY CHECK (phase BETWEEN 1 AND 5),
    status         text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    seconds        double precision,
    row_counts     jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_error     text
);

CREATE TABLE migration.run_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    phase          smallint,
    event          text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Every migrated legacy row, and where it went. Partitioned by legacy table so that a phase's
-- rows can be loaded, indexed and rolled back on their own.
CREATE TABLE migration.crosswalk (
    source_table   text NOT NULL,
    source_id      bigint NOT NULL,
    target_table   text NOT NULL,
    target_id      uuid NOT NULL
) PARTITION BY LIST (source_table);

CREATE TABLE migration.crosswalk_users PARTITION OF migration.crosswalk FOR VALUES IN ('users');
CREATE TABLE migration.crosswalk_persons PARTITION OF migration.crosswalk FOR VALUES IN ('persons');
CREATE TABLE migration.crosswalk_students PARTITION OF migration.crosswalk FOR VALUES IN ('students');
CREATE TABLE migration.crosswalk_teachers PARTITION OF migration.crosswalk FOR VALUES IN ('teachers');
CREATE TABLE migration.crosswalk_organizations PARTITION OF migration.crosswalk
    FOR VALUES IN ('organizations');
CREATE TABLE migration.crosswalk_courses PARTITION OF migration.crosswalk FOR VALUES IN ('courses');
CREATE TABLE migration.crosswalk_course_students PARTITION OF migration.crosswalk
    FOR VALUES IN ('course_students');
CREATE TABLE migration.crosswalk_grades PARTITION OF migration.crosswalk FOR VALUES IN ('grades');

-- Legacy rows that could not be migrated truthfully, whole, with the reason.
CREATE TABLE migration.rejected_rows (
    source_table   text NOT NULL,
    source_id      bigint NOT NULL,
    reason         text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb,
    phase          smallint NOT NULL,
    rejected_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_table, source_id)
);

-- Values the migration changed on the way (a repair), with the rule that did it.
CREATE TABLE migration.repairs (
    source_table   text NOT NULL,
    source_id      bigint NOT NULL,
    column_name    text NOT NULL,
    old_value      text,
    new_value      text,
    rule           text NOT NULL,
    phase          smallint NOT NULL
);
CREATE INDEX repairs_source_idx ON migration.repairs (source_table, source_id);

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    username       text NOT NULL CHECK (username <> '' AND username = btrim(username)),
    email          text CHECK (email = lower(email) AND email LIKE '%_@_%'),
    password_hash  text NOT NULL,
    password_algo  text NOT NULL CHECK (password_algo IN ('md5', 'bcrypt', 'argon2')),
    role           text NOT NULL CHECK (role IN ('student', 'teacher', 'admin', 'staff')),
    is_active      boolean NOT NULL,
    last_login_at  timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE persons (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL UNIQUE REFERENCES users (id),
    first_name     text NOT NULL CHECK (first_name <> ''),
    last_name      text NOT NULL CHECK (last_name <> ''),
    patronymic     text,
    birth_date     date CHECK (birth_date > DATE '1900-01-01'),
    gender         char(1) CHECK (gender IN ('M', 'F')),
    pin            text CHECK (pin ~ '^[0-9A-Z]{7}$'),
    phone          text CHECK (phone ~ '^\+[0-9]{8,15}$'),
    address        text,
    created_at     timestamptz NOT NULL
);

CREATE TABLE organization_units (
    id             uuid PRIMARY KEY,
    parent_id      uuid REFERENCES organization_units (id),
    type           text NOT NULL CHECK (type IN ('university', 'faculty', 'department', 'program')),
    code           text,
    name           jsonb NOT NULL CHECK (jsonb_typeof(name) = 'object'
                                         AND coalesce(name ->> 'az', '') <> ''),
    is_active      boolean NOT NULL,
    CHECK ((type = 'university') = (parent_id IS NULL)),
    CHECK (parent_id IS DISTINCT FROM id)
);

CREATE TABLE academic_terms (
    id             uuid PRIMARY KEY,
    academic_year  text NOT NULL CHECK (academic_year ~ '^[0-9]{4}-[0-9]{4}$'),
    term_type      text NOT NULL CHECK (term_type IN ('fall', 'spring')),
    name           jsonb NOT NULL CHECK (coalesce(name ->> 'az', '') <> ''),
    start_date     date NOT NULL,
    end_date       date NOT NULL CHECK (end_date > start_date),
    is_current     boolean NOT NULL DEFAULT false,
    UNIQUE (academic_year, term_type)
);

CREATE TABLE students (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL UNIQUE REFERENCES users (id),
    person_id      uuid NOT NULL REFERENCES persons (id),
    program_id     uuid NOT NULL REFERENCES organization_units (id),
    student_number text NOT NULL UNIQUE CHECK (student_number <> ''),
    admission_year smallint CHECK (admission_year BETWEEN 1950 AND 2100),
    status         text NOT NULL
                   CHECK (status IN ('active', 'graduated', 'expelled', 'academic_leave')),
    gpa            numeric(5, 2) CHECK (gpa BETWEEN 0 AND 100),
    group_name     text,
    education_form text CHECK (education_form IN ('full_time', 'part_time')),
    created_at     timestamptz NOT NULL
);

CREATE TABLE staff_members (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL UNIQUE REFERENCES users (id),
    person_id      uuid NOT NULL REFERENCES persons (id),
    organization_unit_id uuid NOT NULL REFERENCES organization_units (id),
    position       text NOT NULL CHECK (position IN ('professor', 'associate_professor',
                                                     'senior_lecturer', 'lecturer', 'assistant')),
    position_title jsonb NOT NULL CHECK (coalesce(position_title ->> 'az', '') <> ''),
    position_rank  smallint NOT NULL CHECK (position_rank BETWEEN 1 AND 5),
    academic_degree text,
    hire_date      date,
    is_active      boolean NOT NULL
);

CREATE TABLE courses (
    id             uuid PRIMARY KEY,
    code           text NOT NULL UNIQUE CHECK (code <> '' AND code = upper(code)),
    name           jsonb NOT NULL CHECK (jsonb_typeof(name) = 'object'
                                         AND coalesce(name ->> 'az', '') <> ''),
    credit_hours   numeric(4, 1) NOT NULL CHECK (credit_hours > 0 AND credit_hours <= 60),
    organization_unit_id uuid REFERENCES organization_units (id)
);

CREATE TABLE course_offerings (
    id             uuid PRIMARY KEY,
    course_id      uuid NOT NULL REFERENCES courses (id),
    academic_term_id uuid NOT NULL REFERENCES academic_terms (id),
    section_code   text,
    instructor_id  uuid REFERENCES staff_members (id),
    max_students   integer CHECK (max_students > 0),
    created_at     timestamptz NOT NULL
);

CREATE TABLE course_enrollments (
    id             uuid PRIMARY KEY,
    student_id     uuid NOT NULL REFERENCES students (id),
    course_offering_id uuid NOT NULL REFERENCES course_offerings (id),
    enrollment_status text NOT NULL
                   CHECK (enrollment_status IN ('enrolled', 'completed', 'failed', 'dropped')),
    final_score    numeric(5, 2) CHECK (final_score BETWEEN 0 AND 100),
    grade          char(1) CHECK (grade IN ('A', 'B', 'C', 'D', 'E', 'F')),
    enrolled_at    timestamptz NOT NULL,
    UNIQUE (student_id, course_offering_id)
);

CREATE TABLE assessments (
    id             uuid PRIMARY KEY,
    course_offering_id uuid NOT NULL REFERENCES course_offerings (id),
    assessment_type text NOT NULL CHECK (assessment_type IN (
                   'attendance', 'seminar', 'colloquium', 'independent_work', 'midterm', 'final_exam')),
    title          jsonb NOT NULL CHECK (coalesce(title ->> 'az', '') <> ''),
    max_score      numeric(5, 2) NOT NULL CHECK (max_score > 0),
    UNIQUE (course_offering_id, assessment_type)
);

CREATE TABLE grades (
    id             uuid PRIMARY KEY,
    enrollment_id  uuid NOT NULL REFERENCES course_enrollments (id),
    assessment_id  uuid NOT NULL REFERENCES assessments (id),
    score          numeric(5, 2) CHECK (score >= 0),
    is_absent      boolean NOT NULL DEFAULT false,
    graded_on      date,
    graded_by      uuid REFERENCES staff_members (id),
    created_at     timestamptz NOT NULL,
    CHECK (is_absent = (score IS NULL))
);

-- Inlinable (no FROM clause), so deriving millions of ids costs one md5 per row. The secret is
-- read from migration.state into the session setting edu_migrate.id_secret by the tool.
CREATE FUNCTION migration.derive_id(kind text, legacy_key text) RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
RETURN md5(current_setting('edu_migrate.id_secret') || '/' || kind || '/' || legacy_key)::uuid;
