-- Phase 3's inverse: organization units back into legacy organizations rows (see
-- phase1_inverse.sql for the shape). Academic terms are derived in edu from the course runs'
-- edu_year and semester: a term written on edu_v2 is a value edu cannot hold (list_losses).

-- name: invert_organization_units
INSERT INTO round_images (target_table, target_id, source_table, source_id, action, image)
SELECT d.table_name, d.row_id, 'organizations', d.legacy_id,
       CASE WHEN o.id IS NULL THEN 'delete' WHEN d.created THEN 'insert' ELSE 'update' END,
       CASE WHEN o.id IS NOT NULL THEN (
           SELECT coalesce(jsonb_object_agg(c.legacy, c.value), '{}'::jsonb) FROM (VALUES
               ('parent_id', to_jsonb((SELECT k.source_id FROM migration.legacy_keys k
                                       WHERE k.target_table = 'organization_units'
                                         AND k.target_id = o.parent_id LIMIT 1)),
                b.parent_id IS DISTINCT FROM o.parent_id),
               ('type_id', to_jsonb(CASE o.type WHEN 'university' THEN 1 WHEN 'faculty' THEN 2
                                               WHEN 'department' THEN 3 WHEN 'program' THEN 4 END),
                b.type IS DISTINCT FROM o.type),
               ('code', to_jsonb(o.code), b.code IS DISTINCT FROM o.code),
               ('name_az', to_jsonb(o.name ->> 'az'), b.name -> 'az' IS DISTINCT FROM o.name -> 'az'),
               ('name_ru', to_jsonb(o.name ->> 'ru'), b.name -> 'ru' IS DISTINCT FROM o.name -> 'ru'),
               ('name_en', to_jsonb(o.name ->> 'en'), b.name -> 'en' IS DISTINCT FROM o.name -> 'en'),
               ('is_active', to_jsonb(o.is_active::integer), b.is_active IS DISTINCT FROM o.is_active)
           ) c (legacy, value, changed)
           WHERE d.created OR c.changed) END
FROM reverse_delta d
LEFT JOIN organization_units o ON o.id = d.row_id
LEFT JOIN LATERAL jsonb_populate_record(NULL::organization_units, d.before) b ON true
WHERE d.table_name = 'organization_units' AND d.legacy_id IS NOT NULL;
