-- edu_v2, version 2: indexes for the guide's queries and the LMS's everyday access paths.

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (email) WHERE email IS NOT NULL;
CREATE INDEX persons_last_first_idx ON persons (last_name, first_name);
CREATE INDEX organization_units_parent_idx ON organization_units (parent_id);
CREATE INDEX organization_units_type_idx ON organization_units (type);
CREATE UNIQUE INDEX academic_terms_one_current ON academic_terms (is_current) WHERE is_current;
CREATE INDEX students_program_idx ON students (program_id);
CREATE INDEX students_person_idx ON students (person_id);
CREATE INDEX staff_members_unit_idx ON staff_members (organization_unit_id);
CREATE INDEX staff_members_person_idx ON staff_members (person_id);
CREATE INDEX courses_unit_idx ON courses (organization_unit_id);
CREATE INDEX course_offerings_term_course_idx ON course_offerings (academic_term_id, course_id);
CREATE INDEX course_offerings_course_idx ON course_offerings (course_id);
CREATE INDEX course_offerings_instructor_idx ON course_offerings (instructor_id, academic_term_id);
CREATE INDEX course_enrollments_offering_idx ON course_enrollments (course_offering_id);
CREATE INDEX assessments_offering_idx ON assessments (course_offering_id);
CREATE INDEX grades_enrollment_idx ON grades (enrollment_id);
CREATE INDEX grades_assessment_idx ON grades (assessment_id);
CREATE INDEX grades_graded_by_idx ON grades (graded_by);

-- The crosswalk, both ways, per legacy table.
CREATE INDEX crosswalk_users_source_idx ON migration.crosswalk_users (source_id);
CREATE INDEX crosswalk_users_target_idx ON migration.crosswalk_users (target_id);
CREATE INDEX crosswalk_persons_source_idx ON migration.crosswalk_persons (source_id);
CREATE INDEX crosswalk_persons_target_idx ON migration.crosswalk_persons (target_id);
CREATE INDEX crosswalk_students_source_idx ON migration.crosswalk_students (source_id);
CREATE INDEX crosswalk_students_target_idx ON migration.crosswalk_students (target_id);
CREATE INDEX crosswalk_teachers_source_idx ON migration.crosswalk_teachers (source_id);
CREATE INDEX crosswalk_teachers_target_idx ON migration.crosswalk_teachers (target_id);
CREATE INDEX crosswalk_organizations_source_idx ON migration.crosswalk_organizations (source_id);
CREATE INDEX crosswalk_organizations_target_idx ON migration.crosswalk_organizations (target_id);
CREATE INDEX crosswalk_courses_source_idx ON migration.crosswalk_courses (source_id);
CREATE INDEX crosswalk_courses_target_idx ON migration.crosswalk_courses (target_id);
CREATE INDEX crosswalk_course_students_source_idx ON migration.crosswalk_course_students (source_id);
CREATE INDEX crosswalk_course_students_target_idx ON migration.crosswalk_course_students (target_id);
CREATE INDEX crosswalk_grades_source_idx ON migration.crosswalk_grades (source_id);
CREATE INDEX crosswalk_grades_target_idx ON migration.crosswalk_grades (target_id);
