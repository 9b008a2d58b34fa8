-- The signed-in teacher's own staff record.
SELECT m.position_title, m.academic_degree, u.name AS department
FROM staff_members m
LEFT JOIN organization_units u ON u.id = m.organization_unit_id
WHERE m.id = current_staff_id()
