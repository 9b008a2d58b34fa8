"""Security in edu_v2: password hashes, the audit trail around bulk work, login."""
