"""The benchmark of issue 5: raw copy-through, edu-migrate and pgloader on the same legacy data,
and the LMS's everyday queries on edu against edu_v2. Run with `make bench`."""
