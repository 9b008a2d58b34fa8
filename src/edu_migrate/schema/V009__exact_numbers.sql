-- edu_v2, version 9: numbers as the legacy rows wrote them. A gpa of 78.456, 3.25 credits or a
-- mark of 8.125 were rounded by the narrower types of version 1 without a record; numeric
-- without a scale keeps every digit the legacy parsers accept (migration.parse_decimal). The
-- range checks stay.

ALTER TABLE students ALTER COLUMN gpa TYPE numeric;
ALTER TABLE courses ALTER COLUMN credit_hours TYPE numeric;
ALTER TABLE grades ALTER COLUMN score TYPE numeric;
