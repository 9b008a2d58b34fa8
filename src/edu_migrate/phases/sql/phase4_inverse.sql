-- Phase 4's inverse: the catalogue and the offerings back into legacy course runs (see
-- phase1_inverse.sql for the shape). Legacy `courses` holds one row per run: an offering is its
-- run; a catalogue course's names and credits go to every run of it (phase4.sql keeps the value
-- most runs agree on, so all of them must say it). A course's code names its id (derived from
-- the code), and an offering's term is derived from its run's year and semester: a new course,
-- a changed code, a new offering and a moved term are values edu cannot hold as such (list_losses).

-- name: invert_course_offerings
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'courses', d.legacy_id,
       CASE WHEN o.id IS NULL THEN 'delete' ELSE 'update' END,
       CASE WHEN o.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('section', to_jsonb(o.section_code), b.section_code IS DISTINCT FROM o.section_code),
               ('teacher_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                        WHERE k.target_table = 'staff_members'
                                          AND k.target_id = o.instructor_id LIMIT 1)),
                b.instructor_id IS DISTINCT FROM o.instructor_id),
               ('max_students', to_jsonb(o.max_students),
                b.max_students IS DISTINCT FROM o.max_students),
               ('created_at', to_jsonb(o.created_at AT TIME ZONE 'Asia/Baku'),
                b.created_at IS DISTINCT FROM o.created_at)
           ) c (legacy, value, changed)
           WHERE c.changed) END
FROM reverse_delta d
LEFT JOIN course_offerings o ON o.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::course_offerings, d.before) b ON true
WHERE d.table_name = 'course_offerings' AND d.legacy_id IS NOT NULL AND NOT d.created;

-- name: invert_courses
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'courses', x.source_id, 'update', changed.image
FROM reverse_delta d
JOIN courses c ON c.id = d.row_id
JOIN LATERAL jsonb_populate_record(NULL::courses, d.before) b ON true
CROSS JOIN LATERAL (
    SELECT jsonb_object_agg(v.legacy, v.value) AS image FROM (VALUES
        ('name_az', to_jsonb(c.name ->> 'az'), b.name -> 'az' IS DISTINCT FROM c.name -> 'az'),
        ('name_ru', to_jsonb(c.name ->> 'ru'), b.name -> 'ru' IS DISTINCT FROM c.name -> 'ru'),
        ('name_en', to_jsonb(c.name ->> 'en'), b.name -> 'en' IS DISTINCT FROM c.name -> 'en'),
        ('credits', to_jsonb(c.credit_hours::text), b.credit_hours IS DISTINCT FROM c.credit_hours),
        ('org_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                             WHERE k.target_table = 'organization_units'
                               AND k.target_id = c.organization_unit_id LIMIT 1)),
         b.organization_unit_id IS DISTINCT FROM c.organization_unit_id)
    ) v (legacy, value, changed) WHERE v.changed
) changed
JOIN migration.crosswalk_courses x ON x.target_table = 'courses' AND x.target_id = c.id
WHERE d.table_name = 'courses' AND d.before IS NOT NULL AND changed.image IS NOT NULL;
