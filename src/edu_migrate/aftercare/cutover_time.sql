-- When edu_v2 went live: the first passing `cutover-check` after the migration's last phase
-- finished (a migration redone after a cutover needs a cutover of its own).
SELECT min(l.at)
FROM migration.run_log l
WHERE l.event = 'cutover'
  AND l.at >= coalesce((SELECT max(finished_at) FROM migration.phase_runs), '-infinity')
