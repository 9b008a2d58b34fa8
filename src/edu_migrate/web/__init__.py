"""The reference API over edu_v2: row-level security does the access control."""
