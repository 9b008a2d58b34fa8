"""After the cutover: the guide's day-1, week-1 and month-1 tasks (health, tuning, scheduled
backups, decommissioning edu, measuring "no performance degradation")."""
