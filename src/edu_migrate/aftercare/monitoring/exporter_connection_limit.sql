-- The server's connection limit, and the part of it kept for superusers.
SELECT current_setting('max_connections')::int AS max,
       current_setting('superuser_reserved_connections')::int AS reserved_for_superusers
