-- edu_v2, version 16: a COMMENT on every business table and column, so that the catalogue
-- explains itself to psql's \d+, to any schema browser and to `edu-migrate docs`, which writes
-- the data dictionary from these comments. Times are timestamptz (legacy times were Baku
-- wall-clock times); keys are UUIDs derived from the legacy ids (migration.crosswalk maps them).

COMMENT ON TABLE users IS 'An account of the LMS: one per legacy users row kept (phase 1).';
COMMENT ON COLUMN users.id IS 'Key, derived from the legacy users.id with the id secret.';
COMMENT ON COLUMN users.username IS 'Sign-in name, trimmed; unique case-insensitively (a later duplicate is renamed <name>.<legacy id>).';
COMMENT ON COLUMN users.email IS 'E-mail address, lower-case; none when the legacy one was blank, invalid or taken by an older account.';
COMMENT ON COLUMN users.password_hash IS 'The password hash as the legacy LMS stored it (MD5 or bcrypt), or argon2 once rehashed at a sign-in. Never shown.';
COMMENT ON COLUMN users.password_algo IS 'The scheme of password_hash: md5, bcrypt or argon2.';
COMMENT ON COLUMN users.role IS 'student, teacher, admin or staff (legacy user_type 1-4).';
COMMENT ON COLUMN users.is_active IS 'Whether the account may sign in.';
COMMENT ON COLUMN users.last_login_at IS 'Last sign-in; none when the account never signed in.';
COMMENT ON COLUMN users.created_at IS 'When the account was created (missing legacy values: updated_at, else the as-of time).';
COMMENT ON COLUMN users.updated_at IS 'When the account last changed (missing legacy values: created_at, else the as-of time).';

COMMENT ON TABLE persons IS 'The person behind an account: names, birth date, contact (phase 1); one per user.';
COMMENT ON COLUMN persons.id IS 'Key, derived from the legacy persons.id.';
COMMENT ON COLUMN persons.user_id IS 'The account of this person (one person per user).';
COMMENT ON COLUMN persons.first_name IS 'Given name, white space trimmed and collapsed.';
COMMENT ON COLUMN persons.last_name IS 'Family name, white space trimmed and collapsed.';
COMMENT ON COLUMN persons.patronymic IS 'Father''s name (ata adı); none when blank.';
COMMENT ON COLUMN persons.birth_date IS 'Date of birth, read from the three legacy text formats; none when it did not parse, lay in the future or on or before 1900-01-01.';
COMMENT ON COLUMN persons.gender IS 'M or F (legacy M/F, K/Q, Cyrillic М/Ж); none when unrecognised.';
COMMENT ON COLUMN persons.pin IS 'FİN, the 7-character personal identification number, upper-case; none when malformed.';
COMMENT ON COLUMN persons.phone IS 'Phone number in E.164 (+994…); none when not a valid number.';
COMMENT ON COLUMN persons.address IS 'Postal address, white space trimmed; none when blank.';
COMMENT ON COLUMN persons.created_at IS 'When the person was recorded (missing: the as-of time).';

COMMENT ON TABLE organization_units IS 'The university''s tree: university, faculties, departments and programs (phase 3).';
COMMENT ON COLUMN organization_units.id IS 'Key, derived from the legacy organizations.id.';
COMMENT ON COLUMN organization_units.parent_id IS 'The unit above; none for the university only.';
COMMENT ON COLUMN organization_units.type IS 'university, faculty, department or program (legacy type_id 1-4).';
COMMENT ON COLUMN organization_units.code IS 'The unit''s short code, trimmed; none when blank.';
COMMENT ON COLUMN organization_units.name IS 'Name by language: {"az": …, "ru": …, "en": …}; az always present.';
COMMENT ON COLUMN organization_units.is_active IS 'Whether the unit still exists (legacy blank: active; not 0 or 1: inactive).';

COMMENT ON TABLE academic_terms IS 'Fall and spring terms, made from the legacy courses'' edu_year and semester (phase 3).';
COMMENT ON COLUMN academic_terms.id IS 'Key, derived from the academic year and the term type.';
COMMENT ON COLUMN academic_terms.academic_year IS 'The academic year, e.g. 2023-2024.';
COMMENT ON COLUMN academic_terms.term_type IS 'fall or spring (legacy semester 1 or 2).';
COMMENT ON COLUMN academic_terms.name IS 'Name by language: {"az": …, "ru": …, "en": …}.';
COMMENT ON COLUMN academic_terms.start_date IS 'First day of the term.';
COMMENT ON COLUMN academic_terms.end_date IS 'Last day of the term, after start_date.';
COMMENT ON COLUMN academic_terms.is_current IS 'The latest term that started on or before the as-of day.';

COMMENT ON TABLE students IS 'A student''s record: program, number, status (phase 2); one per user.';
COMMENT ON COLUMN students.id IS 'Key, derived from the legacy students.id.';
COMMENT ON COLUMN students.user_id IS 'The student''s account (one student record per user).';
COMMENT ON COLUMN students.person_id IS 'The student''s person (the user''s person when the legacy person_id was missing).';
COMMENT ON COLUMN students.program_id IS 'The program (an organization unit of type program) the student studies in.';
COMMENT ON COLUMN students.student_number IS 'The student number, trimmed and unique (a later duplicate becomes <number>-<legacy id>).';
COMMENT ON COLUMN students.admission_year IS 'Year of admission, 1950-2100; none when out of range.';
COMMENT ON COLUMN students.status IS 'active, graduated, expelled or academic_leave (legacy words in English or Azerbaijani, any case).';
COMMENT ON COLUMN students.gpa IS 'Grade point average on the 0-100 scale, exact; none when not a number or out of range.';
COMMENT ON COLUMN students.group_name IS 'The student''s group, trimmed; none when blank.';
COMMENT ON COLUMN students.education_form IS 'full_time (əyani) or part_time (qiyabi); none when unrecognised.';
COMMENT ON COLUMN students.created_at IS 'When the record was created (missing: the as-of time).';

COMMENT ON TABLE staff_members IS 'A teacher''s appointment: department, position, degree (phase 2, from legacy teachers); one per user.';
COMMENT ON COLUMN staff_members.id IS 'Key, derived from the legacy teachers.id.';
COMMENT ON COLUMN staff_members.user_id IS 'The teacher''s account (one staff record per user).';
COMMENT ON COLUMN staff_members.person_id IS 'The teacher''s person (the user''s person when the legacy person_id was missing).';
COMMENT ON COLUMN staff_members.organization_unit_id IS 'The department (or faculty) the teacher belongs to.';
COMMENT ON COLUMN staff_members.position IS 'professor, associate_professor, senior_lecturer, lecturer or assistant.';
COMMENT ON COLUMN staff_members.position_title IS 'The position''s title by language: {"az": …, "ru": …, "en": …}.';
COMMENT ON COLUMN staff_members.position_rank IS 'Rank of the position, 1 (professor) to 5 (assistant).';
COMMENT ON COLUMN staff_members.academic_degree IS 'Academic degree as written, trimmed; none when blank.';
COMMENT ON COLUMN staff_members.hire_date IS 'Date of hire; none when it lay after the as-of day.';
COMMENT ON COLUMN staff_members.is_active IS 'Whether the teacher still teaches (legacy blank: active; not 0 or 1: inactive).';

COMMENT ON TABLE courses IS 'The course catalogue: one course per normalised code, merged from the legacy course runs (phase 4).';
COMMENT ON COLUMN courses.id IS 'Key, derived from the normalised course code.';
COMMENT ON COLUMN courses.code IS 'Course code, upper-case without spaces or punctuation, unique.';
COMMENT ON COLUMN courses.name IS 'Name by language: {"az": …, "ru": …, "en": …}, the one most runs agree on.';
COMMENT ON COLUMN courses.credit_hours IS 'Credits (ECTS), exact, the value most runs agree on.';
COMMENT ON COLUMN courses.organization_unit_id IS 'The department offering the course; none when no run''s department was kept.';

COMMENT ON TABLE course_offerings IS 'A course taught in one term by one instructor: one per legacy courses row kept (phase 4).';
COMMENT ON COLUMN course_offerings.id IS 'Key, derived from the legacy courses.id.';
COMMENT ON COLUMN course_offerings.course_id IS 'The catalogue course.';
COMMENT ON COLUMN course_offerings.academic_term_id IS 'The term (legacy edu_year and semester).';
COMMENT ON COLUMN course_offerings.section_code IS 'Section, trimmed; none when blank.';
COMMENT ON COLUMN course_offerings.instructor_id IS 'The teaching staff member; none when the legacy teacher was missing or set aside.';
COMMENT ON COLUMN course_offerings.max_students IS 'Capacity; none when the legacy value was not positive.';
COMMENT ON COLUMN course_offerings.created_at IS 'When the run was created (missing: the as-of time).';

COMMENT ON TABLE course_enrollments IS 'A student in a course offering, with the final result (phase 5, from legacy course_students).';
COMMENT ON COLUMN course_enrollments.id IS 'Key, derived from the legacy course_students.id (of the surviving row when duplicates were merged).';
COMMENT ON COLUMN course_enrollments.student_id IS 'The student.';
COMMENT ON COLUMN course_enrollments.course_offering_id IS 'The course offering; one enrollment per student and offering.';
COMMENT ON COLUMN course_enrollments.enrollment_status IS 'enrolled, completed, failed or dropped.';
COMMENT ON COLUMN course_enrollments.final_score IS 'Final score, 0-100; none when out of range.';
COMMENT ON COLUMN course_enrollments.grade IS 'Letter A-F; derived from the final score when the legacy letter was missing or invalid.';
COMMENT ON COLUMN course_enrollments.enrolled_at IS 'When the student enrolled (missing: the as-of time).';

COMMENT ON TABLE assessments IS 'A kind of assessment within a course offering, with its maximum score (phase 5, from the legacy grade types).';
COMMENT ON COLUMN assessments.id IS 'Key, derived from the offering and the assessment type.';
COMMENT ON COLUMN assessments.course_offering_id IS 'The course offering assessed.';
COMMENT ON COLUMN assessments.assessment_type IS 'attendance, seminar, colloquium, independent_work, midterm or final_exam (legacy grade_type 1-6).';
COMMENT ON COLUMN assessments.title IS 'Title by language: {"az": …, "ru": …, "en": …}.';
COMMENT ON COLUMN assessments.max_score IS 'The highest score of this type (legacy-edu.md''s scale).';

COMMENT ON TABLE grades IS 'One mark of one enrollment in one assessment (phase 5, from legacy grades).';
COMMENT ON COLUMN grades.id IS 'Key, derived from the legacy grades.id.';
COMMENT ON COLUMN grades.enrollment_id IS 'The enrollment the mark belongs to.';
COMMENT ON COLUMN grades.assessment_id IS 'The assessment the mark is for.';
COMMENT ON COLUMN grades.score IS 'The score, exact, from 0 to the assessment''s maximum; none when absent.';
COMMENT ON COLUMN grades.is_absent IS 'The student was absent (legacy q/b): then score is none.';
COMMENT ON COLUMN grades.graded_on IS 'The lesson''s date.';
COMMENT ON COLUMN grades.graded_by IS 'The staff member who gave the mark; none when the legacy teacher was missing or set aside.';
COMMENT ON COLUMN grades.created_at IS 'When the mark was entered (missing: Baku midnight of the lesson''s day, else the as-of time).';
