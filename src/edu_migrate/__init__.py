"""edu-migrate: move the legacy LMS database edu into edu_v2, safely."""

__version__ = "0.1.0"
