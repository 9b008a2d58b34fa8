-- What the later phases read of each of phases 1–3, as one digest per phase. A sync derives a
-- phase again when what it reads of an earlier phase came out differently, not merely because
-- that phase was derived again: a login changes users (phase 1 again) but none of what phase 2
-- reads. Each digest lists every column the later phases' SQL reads of that phase's results;
-- a later phase that starts reading more must be listed here too (tests/integration/test_sync.py
-- fails otherwise). Phase 5 reads phases 2 and 4 through sync.sql's dependency_outcomes.

-- name: phase_1
-- phase2.sql: the crosswalks of users and persons, users and persons set aside, and each
-- person's user (person_of_user).
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
    SELECT 'user ' || source_id || ' ' || target_id FROM migration.crosswalk_users
    UNION ALL
    SELECT 'person ' || source_id || ' ' || target_id FROM migration.crosswalk_persons
    UNION ALL
    SELECT 'aside ' || source_table || ' ' || source_id FROM migration.rejected_rows
    WHERE source_table IN ('users', 'persons')
    UNION ALL
    SELECT 'owner ' || id || ' ' || user_id FROM persons
) read_by_later_phases (item);

-- name: phase_3
-- phase2.sql: the organizations' crosswalk, their units' types, organizations set aside;
-- phase4.sql: the crosswalk and the terms by year and type.
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
    SELECT 'unit ' || source_id || ' ' || target_id FROM migration.crosswalk_organizations
    UNION ALL
    SELECT 'type ' || id || ' ' || type FROM organization_units
    UNION ALL
    SELECT 'aside ' || source_id FROM migration.rejected_rows
    WHERE source_table = 'organizations'
    UNION ALL
    SELECT 'term ' || id || ' ' || academic_year || '/' || term_type FROM academic_terms
) read_by_later_phases (item);

-- name: phase_2
-- phase4.sql: the teachers' crosswalk (a run's instructor).
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
    SELECT 'teacher ' || source_id || ' ' || target_id FROM migration.crosswalk_teachers
) read_by_later_phases (item);
