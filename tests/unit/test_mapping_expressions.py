"""A mapping's `sql` entry must be one expression: it is pasted into the source's queries."""

from __future__ import annotations

import pytest

from edu_migrate.errors import MappingError
from edu_migrate.mapping import build_mapping, expression_problem

ONE_EXPRESSION = [
    "CASE active WHEN true THEN 1 WHEN false THEN 0 END",
    "to_date(hire_date, 'DD/MM/YYYY')",
    r"regexp_replace(phone, '\D', '', 'g')",
    "coalesce(email, 'none; really')",
    'lower("odd;name")',
    '"say ""hi"";"',
    "$$a;b$$ || $x$)$x$",
    r"E'it\'s; fine'",
    "x -- a comment; with a semicolon\n + 1",
    "x /* nested /* ; */ still */ + 1",
    "(a + (b))",
    "price$1",
]

NOT_ONE = [
    ("email); DROP TABLE public.rooms; SELECT (email", "did not open"),
    ("1; SELECT 2", "';'"),
    ("a) UNION (SELECT password FROM users", "did not open"),
    ("(a", "not closed"),
    ("'abc", "string"),
    (r"'it\'s; not'", "';'"),
    ('"abc', "quoted name"),
    ("$q$ abc", "dollar quote"),
    ("x /* y", "comment"),
    ("x -- and the closing parenthesis is gone", "comment"),
    ("   ", "empty"),
]


@pytest.mark.parametrize("text", ONE_EXPRESSION)
def test_one_expression_is_accepted(text: str) -> None:
    assert expression_problem(text) is None


@pytest.mark.parametrize(("text", "why"), NOT_ONE)
def test_anything_else_is_refused(text: str, why: str) -> None:
    problem = expression_problem(text)
    assert problem is not None and why in problem


def test_the_mapping_names_the_table_and_the_column() -> None:
    with pytest.raises(MappingError) as refused:
        build_mapping({"grades": {"columns": {"value": {"sql": "value; COMMIT"}}}}, "file m.toml")
    assert "grades.value" in refused.value.message
    assert "single expression" in refused.value.message
