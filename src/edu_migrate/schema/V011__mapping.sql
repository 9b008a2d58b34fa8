-- The source's own table beside the legacy name the migration uses for it: with a legacy mapping
-- (docs/mapping.md), `users` may have been read from `lms.auth_user`. Set by each phase for the
-- rows it wrote; NULL only for rows written before this version.
ALTER TABLE migration.crosswalk ADD COLUMN source_relation text;
ALTER TABLE migration.rejected_rows ADD COLUMN source_relation text;
