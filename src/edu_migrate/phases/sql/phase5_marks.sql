-- Phase 5's per-mark work: what each mark's target row owes to the mark alone, the id secret and
-- the as-of time, and nothing else. One query over scoped_grades, wrapped by phases/marks.py:
-- in a full run before the phase's transaction, in parallel sessions each over a range of ids,
-- into the work table stage.parsed_grades; in a sync inside its transaction, over the scope.
-- phase5.sql joins the work table and adds what depends on other rows (decided_marks).

-- name: parse_grades
-- The reject reasons that need only the mark, in the order decided_marks tests them after the
-- enrollment's. `OFFSET 0` keeps each inner query whole: pulled up, its expressions would be
-- evaluated again wherever the outer query names them (the parsed score four times per mark).
-- A value in the usual form ('8', '8.5', '8,5') takes a fast path that yields exactly what
-- migration.parse_decimal would: digits with at most one inner point or comma, 7 characters at
-- most, so nothing to clean, and no digit of another script: has_foreign_digits is tested only
-- off the fast path, here, once, so that no later statement scans every mark to find the few
-- whose parse is a repair (flag_marks, phase5.sql).
SELECT q.source_id, q.course_student_id, q.grade_type, q.score, q.is_absent, q.lesson_date,
       q.teacher_source_id, q.created_at IS NULL AS created_at_missing, q.has_foreign_digits,
       migration.derive_id('grades', q.source_id::text) AS id,
       coalesce(migration.baku_time(q.created_at), migration.baku_time(q.lesson_date::timestamp),
                (SELECT migration.as_of())) AS created_at,
       CASE WHEN q.max_score IS NULL THEN 'unrecognised value: grade_type'
            WHEN q.is_absent IS NOT TRUE AND q.score IS NULL
                THEN 'unrecognised value: mark is not a number'
            WHEN q.score < 0 THEN 'mark is negative'
            WHEN q.score > q.max_score THEN 'mark exceeds the maximum of its type'
            WHEN q.lesson_date > (SELECT migration.as_of_date()) THEN 'lesson_date in the future'
       END AS mark_reject_reason
FROM (
    -- A number is never an absence: the absence test cleans only what did not parse.
    SELECT p.*,
           CASE WHEN p.score IS NOT NULL THEN false
                ELSE lower(migration.clean_text(p.value)) IN ('q/b', 'qb', 'q/b.')
           END AS is_absent
    FROM (
        SELECT g.id AS source_id,
               g.course_student_id,
               g.grade_type,
               CASE g.grade_type WHEN 1 THEN 1 WHEN 2 THEN 10 WHEN 3 THEN 10 WHEN 4 THEN 10
                                 WHEN 5 THEN 20 WHEN 6 THEN 50 END AS max_score,
               g.value,
               CASE WHEN g.fast THEN replace(g.value, ',', '.')::numeric
                    ELSE migration.parse_decimal(g.value)
               END AS score,
               CASE WHEN g.fast THEN false ELSE migration.has_foreign_digits(g.value)
               END AS has_foreign_digits,
               g.lesson_date, g.teacher_id AS teacher_source_id, g.created_at
        FROM (
            SELECT g.*,
                   length(g.value) <= 7
                   AND translate(g.value, '0123456789', '') IN ('', '.', ',')
                   AND ascii(g.value) BETWEEN 48 AND 57
                   AND ascii(right(g.value, 1)) BETWEEN 48 AND 57 AS fast
            FROM scoped_grades g
            OFFSET 0
        ) g
        OFFSET 0
    ) p
    OFFSET 0
) q
