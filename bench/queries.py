"""The LMS's everyday queries, written once against edu and once against edu_v2, timed on both.

The queries and how their subjects are picked are edu-migrate's own (`compare-queries` runs
them too: src/edu_migrate/aftercare/everyday_queries.toml). Each pair answers the same
question for the same subject: the subject is picked in edu (the busiest student, teacher,
term and course run: the worst case an LMS page meets) and carried to edu_v2 through the
crosswalk.
"""

from __future__ import annotations

from typing import Any

import psycopg

from edu_migrate.aftercare.compare import (
    everyday_queries,
    plan_nodes,
    plan_of,
    subjects,
    time_query,
)


def uses_index(nodes: list[str]) -> bool:
    return any("Index" in node for node in nodes)


def run_everyday_queries(legacy_url: str, v2_url: str, repeats: int = 25) -> list[dict[str, Any]]:
    """Median latency of each query on both sides, and the edu_v2 plan's nodes."""
    results = []
    with psycopg.connect(legacy_url, autocommit=True) as legacy, \
            psycopg.connect(v2_url, autocommit=True) as v2:
        old_sides, new_sides = subjects(legacy, v2)
        for query in everyday_queries():
            assert query.subject is not None
            old_params, new_params = old_sides[query.subject], new_sides[query.subject]
            old = time_query(legacy, query.old, old_params, repeats)
            new = time_query(v2, query.new, new_params, repeats)
            nodes = plan_nodes(plan_of(v2, query.new, new_params))
            results.append({"query": query.name, "edu": old, "edu_v2": new,
                            "edu_v2_plan": nodes, "edu_v2_uses_index": uses_index(nodes),
                            "edu_plan": plan_nodes(plan_of(legacy, query.old, old_params))})
    return results
