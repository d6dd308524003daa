"""Fuzzing the parsers of untrusted input: only clean, documented errors come out.

* ``memguard report``'s loader (:func:`load_report`, :func:`parse_report_text`,
  :meth:`ExitReport.from_dict`): arbitrary bytes, arbitrary text, arbitrary JSON, and real
  reports with one field replaced by arbitrary JSON; what loads must also render;
* the suppressions parser: arbitrary text;
* the options parser: arbitrary text, and arbitrary JSON values as keyword options.

Bounded (``max_examples``) so the suite stays fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memguard.errors import OptionsError, SuppressionsError
from memguard.options import OPTION_SPECS, Options, parse_options
from memguard.reporting.exitreport import (
    ExitReport,
    ReportFileError,
    load_report,
    parse_report_text,
    render_json,
    render_text,
)
from memguard.reporting.suppressions import Suppressions
from sample_report import real_report

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

#: Values that are wrong for most fields in ways a lenient reader mishandles.
edge_values = st.sampled_from(
    [True, False, None, 1.5, -1, 1 << 70, -(1 << 70), 1e300, float("inf"), float("-inf"), float("nan"), "", "12", [], {}]
)
#: Arrays nested up to a few thousand deep (Python's parser recurses once per level).
deep_json = st.integers(min_value=0, max_value=5000).map(lambda n: "[" * n + "]" * n)


REAL = real_report()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (keys and indexes)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, prefix + (i,)))
    return out


PATHS = _paths(REAL)


def _loads_or_refuses(text: str) -> None:
    """``text`` loads (and then renders) or is refused with a one-line ReportFileError."""
    try:
        result = parse_report_text(text, "fuzz.json")
    except ReportFileError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(result, ExitReport)
    render_text(result, verbose=True)
    json.loads(render_json(result))


@FUZZ
@given(json_values)
def test_report_loader_on_arbitrary_json(value: Any) -> None:
    _loads_or_refuses(json.dumps(value))


@FUZZ
@given(json_values)
def test_report_loader_on_arbitrary_json_with_the_schema(value: Any) -> None:
    doc = dict(value) if isinstance(value, dict) else {"x": value}
    doc["schema"] = "memguard.exit-report"
    doc.setdefault("schema_version", 1)
    _loads_or_refuses(json.dumps(doc))


@FUZZ
@given(st.sampled_from(PATHS), edge_values | json_values)
def test_report_loader_on_a_real_report_with_one_field_replaced(path: tuple[Any, ...], value: Any) -> None:
    doc = json.loads(json.dumps(REAL))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _loads_or_refuses(json.dumps(doc))


@FUZZ
@given(st.text(max_size=200) | deep_json)
def test_report_loader_on_arbitrary_text(text: str) -> None:
    _loads_or_refuses(text)


_DIR = tempfile.mkdtemp(prefix="memguard-fuzz-")


@FUZZ
@given(st.binary(max_size=200))
def test_report_loader_on_arbitrary_bytes(data: bytes) -> None:
    path = os.path.join(_DIR, "report.json")
    with open(path, "wb") as f:
        f.write(data)
    try:
        load_report(path)
    except ReportFileError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.text(max_size=300))
def test_suppressions_parser_on_arbitrary_text(text: str) -> None:
    try:
        rules = Suppressions.parse(text, "supp.txt").rules
    except SuppressionsError as exc:
        assert str(exc).startswith("supp.txt:")
        return
    assert all(rule.pattern and rule.filename == "supp.txt" for rule in rules)


_rule_lines = st.lists(
    st.sampled_from(["leak", "overflow", "double-free", "bad-free", "heap-use-after-free", "laek", "", "#x", " "])
    .flatmap(lambda kind: st.text(max_size=15).map(lambda pattern: f"{kind}:{pattern}")),
    max_size=6,
).map("\n".join)


@FUZZ
@given(_rule_lines)
def test_suppressions_parser_on_rule_shaped_text(text: str) -> None:
    try:
        Suppressions.parse(text, "supp.txt")
    except SuppressionsError as exc:
        assert str(exc).startswith("supp.txt:")


_valid_rules = st.lists(
    st.tuples(
        st.sampled_from(["leak", "overflow", "double-free", "bad-free", "heap-use-after-free"]),
        st.from_regex(r"[A-Za-z_*][A-Za-z0-9_*./\[\]-]{0,12}", fullmatch=True),
    ),
    min_size=1,
    max_size=5,
)


@FUZZ
@given(st.booleans(), _valid_rules)
def test_suppressions_parser_accepts_every_valid_file(bom: bool, rules: list[tuple[str, str]]) -> None:
    text = ("\ufeff" if bom else "") + "".join(f"{kind}:{pattern}\n" for kind, pattern in rules)
    parsed = Suppressions.parse(text, "supp.txt").rules
    assert [r.text for r in parsed] == [f"{kind}:{pattern}" for kind, pattern in rules]


@FUZZ
@given(st.text(max_size=200))
def test_options_parser_on_arbitrary_text(text: str) -> None:
    try:
        values = parse_options(text)
    except OptionsError as exc:
        assert str(exc).startswith("MEMGUARD_OPTIONS:")
        return
    assert set(values) <= set(OPTION_SPECS)
    Options(**values)  # type: ignore[arg-type]


_option_items = st.lists(
    st.tuples(st.sampled_from(sorted(OPTION_SPECS) + ["redzon", ""]), st.text(max_size=12)), max_size=5
).map(lambda items: ":".join(f"{k}={v}" for k, v in items))


@FUZZ
@given(_option_items)
def test_options_parser_on_option_shaped_text(text: str) -> None:
    try:
        Options.resolve(env=text)
    except OptionsError as exc:
        assert str(exc).startswith("MEMGUARD_OPTIONS:")


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(OPTION_SPECS)), json_values, max_size=4))
def test_options_from_arbitrary_keyword_values(values: dict[str, Any]) -> None:
    try:
        Options.resolve(env=None, **values)
    except OptionsError:
        pass
