-- The legacy LMS database `edu`, as the DBAs reverse-engineered it (see legacy-edu.md).
-- No table has a foreign key; only primary keys exist. The primary keys are declared in the
-- second section so that the generator can load the rows first and build the indexes once.
-- The generator drops exactly the tables created here (marked with its comment) before it
-- recreates them, and refuses a database that holds any other table.

-- Mapped tables: the migration reads these.

CREATE TABLE public.users (
    id          integer NOT NULL,
    username    varchar(100),
    email       varchar(255),
    password    varchar(255),
    user_type   smallint,
    is_active   smallint,
    last_login  timestamp,
    created_at  timestamp,
    updated_at  timestamp
);

CREATE TABLE public.persons (
    id          integer NOT NULL,
    user_id     integer,
    firstname   varchar(100),
    lastname    varchar(100),
    patronymic  varchar(100),
    birthdate   varchar(20),
    gender      char(1),
    pin         varchar(7),
    phone       varchar(50),
    address     text,
    created_at  timestamp
);

CREATE TABLE public.organizations (
    id          integer NOT NULL,
    parent_id   integer,
    type_id     smallint,
    code        varchar(20),
    name_az     varchar(255),
    name_ru     varchar(255),
    name_en     varchar(255),
    is_active   smallint
);

CREATE TABLE public.students (
    id              integer NOT NULL,
    user_id         integer,
    person_id       integer,
    org_id          integer,
    student_no      varchar(20),
    admission_year  smallint,
    status          varchar(30),
    gpa             varchar(10),
    group_name      varchar(50),
    education_form  varchar(20),
    created_at      timestamp
);

CREATE TABLE public.teachers (
    id          integer NOT NULL,
    user_id     integer,
    person_id   integer,
    org_id      integer,
    position    varchar(100),
    degree      varchar(100),
    hire_date   date,
    is_active   smallint
);

CREATE TABLE public.courses (
    id            integer NOT NULL,
    code          varchar(20),
    name_az       varchar(255),
    name_ru       varchar(255),
    name_en       varchar(255),
    credits       varchar(5),
    org_id        integer,
    teacher_id    integer,
    edu_year      varchar(9),
    semester      smallint,
    section       varchar(10),
    max_students  integer,
    created_at    timestamp
);

CREATE TABLE public.course_students (
    id           integer NOT NULL,
    course_id    integer,
    student_id   integer,
    status       varchar(20),
    final_score  numeric(5,2),
    letter       varchar(2),
    enrolled_at  timestamp
);

CREATE TABLE public.grades (
    id                 bigint NOT NULL,
    course_student_id  integer,
    grade_type         smallint,
    value              varchar(10),
    lesson_date        date,
    teacher_id         integer,
    created_at         timestamp
);

-- Unmapped tables: part of the real database, not read by the migration.

CREATE TABLE public.rooms (
    id         integer NOT NULL,
    building   varchar(50),
    room_no    varchar(10),
    capacity   integer,
    room_type  varchar(30),
    is_active  smallint
);

CREATE TABLE public.schedules (
    id          integer NOT NULL,
    course_id   integer,
    room_id     integer,
    weekday     smallint,
    start_time  time,
    end_time    time,
    lesson_type varchar(20),
    created_at  timestamp
);

CREATE TABLE public.news (
    id            integer NOT NULL,
    author_id     integer,
    title_az      varchar(255),
    body_az       text,
    is_published  smallint,
    published_at  timestamp,
    created_at    timestamp
);

CREATE TABLE public.messages (
    id            integer NOT NULL,
    sender_id     integer,
    recipient_id  integer,
    subject       varchar(255),
    body          text,
    is_read       smallint,
    sent_at       timestamp
);

CREATE TABLE public.user_sessions (
    id           integer NOT NULL,
    user_id      integer,
    session_key  varchar(64),
    ip_address   varchar(45),
    user_agent   varchar(255),
    created_at   timestamp,
    expires_at   timestamp
);

CREATE TABLE public.login_logs (
    id          bigint NOT NULL,
    user_id     integer,
    username    varchar(100),
    ip_address  varchar(45),
    success     smallint,
    user_agent  varchar(255),
    logged_at   timestamp
);

-- A copy of users taken before a schema change long ago and never dropped.
CREATE TABLE public.users_old (
    id          integer NOT NULL,
    username    varchar(100),
    email       varchar(255),
    password    varchar(255),
    user_type   smallint,
    is_active   smallint,
    created_at  timestamp,
    copied_at   timestamp
);

-- @primary-keys

ALTER TABLE public.users ADD PRIMARY KEY (id);
ALTER TABLE public.persons ADD PRIMARY KEY (id);
ALTER TABLE public.organizations ADD PRIMARY KEY (id);
ALTER TABLE public.students ADD PRIMARY KEY (id);
ALTER TABLE public.teachers ADD PRIMARY KEY (id);
ALTER TABLE public.courses ADD PRIMARY KEY (id);
ALTER TABLE public.course_students ADD PRIMARY KEY (id);
ALTER TABLE public.grades ADD PRIMARY KEY (id);
ALTER TABLE public.rooms ADD PRIMARY KEY (id);
ALTER TABLE public.schedules ADD PRIMARY KEY (id);
ALTER TABLE public.news ADD PRIMARY KEY (id);
ALTER TABLE public.messages ADD PRIMARY KEY (id);
ALTER TABLE public.user_sessions ADD PRIMARY KEY (id);
ALTER TABLE public.login_logs ADD PRIMARY KEY (id);
ALTER TABLE public.users_old ADD PRIMARY KEY (id);
