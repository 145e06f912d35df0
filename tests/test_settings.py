"""Tests for the dbt-var helpers (python_udfs.settings)."""

from __future__ import annotations

import pytest

from python_udfs.settings import int_or_none, none_if_blank


@pytest.mark.parametrize("value", [None, "", "   ", "None", "none", "null", " None "])
def test_none_if_blank_unset(value: object) -> None:
    assert none_if_blank(value) is None
    assert int_or_none(value) is None


@pytest.mark.parametrize("value, expected", [
    ("abc", "abc"), ("  padded  ", "padded"), (0, "0"), (12, "12"), (1.5, "1.5"),
    ("NULLABLE", "NULLABLE"), (False, "False"),
])
def test_none_if_blank_keeps_values(value: object, expected: str) -> None:
    assert none_if_blank(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("220", 220), (220, 220), ("0", 0), (0, 0), ("3.0", 3), ("3.9", 3), (7.0, 7), (" 16 ", 16),
    ("-2", -2), ("1e3", 1000),
])
def test_int_or_none_parses(value: object, expected: int) -> None:
    result = int_or_none(value)
    assert result == expected and isinstance(result, int)


@pytest.mark.parametrize("value", ["ten", "1,000", "[]"])
def test_int_or_none_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError):
        int_or_none(value)
