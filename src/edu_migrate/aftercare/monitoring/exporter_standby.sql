-- Whether this server is a standby, and then the age of the last transaction it replayed
-- (seconds; 0 on a primary).
SELECT pg_is_in_recovery()::int AS is_standby,
       CASE WHEN pg_is_in_recovery()
            THEN coalesce(extract(epoch FROM clock_timestamp()
                                  - pg_last_xact_replay_timestamp()), 0)
            ELSE 0 END AS replay_age_seconds
