"""MEMGUARD_OPTIONS parsing, Options.resolve precedence and error messages."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memguard
from memguard.options import OPTION_SPECS, Options, OptionsError, format_options, parse_options


def test_parse_the_documented_example() -> None:
    text = "redzone=32:quarantine_mb=128:stack_depth=16:leak_check=1:exitcode=23:log_path=/tmp/mg"
    assert parse_options(text) == {
        "redzone": 32,
        "quarantine_mb": 128,
        "stack_depth": 16,
        "leak_check": True,
        "exitcode": 23,
        "log_path": "/tmp/mg",
    }


def test_parse_shapes() -> None:
    assert parse_options("") == {}
    assert parse_options(" redzone = 48 : : verbose=yes:") == {"redzone": 48, "verbose": True}
    assert parse_options("redzone=32:redzone=64") == {"redzone": 64}  # last wins
    assert parse_options('log_path="C:\\tmp\\mg":verbose=1') == {"log_path": "C:\\tmp\\mg", "verbose": True}
    assert parse_options("only=mypkg*,other.mod") == {"only": ("mypkg*", "other.mod")}
    assert parse_options("on_error=RAISE:report_format=json") == {"on_error": "raise", "report_format": "json"}
    assert parse_options("leak_check=off:handle_sigterm=true") == {"leak_check": False, "handle_sigterm": True}
    assert parse_options("log_path=") == {"log_path": None}


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ("redzone=17", "redzone", "a multiple of 16 from 16 to 2048"),
        ("redzone=4096", "redzone", "a multiple of 16"),
        ("redzone=abc", "redzone", "a multiple of 16"),
        ("quarantine_mb=-1", "quarantine_mb", "an integer >= 0"),
        ("stack_depth=300", "stack_depth", "from 0 to 256"),
        ("on_error=explode", "on_error", "report, raise or abort"),
        ("canary=random", "canary", "keyed or fixed"),
        ("leak_check=maybe", "leak_check", "0 or 1"),
        ("exitcode=256", "exitcode", "from 0 to 255"),
        ("report_format=xml", "report_format", "text, json or html"),
    ],
)
def test_bad_value_names_key_and_allowed_values(text: str, key: str, fragment: str) -> None:
    with pytest.raises(OptionsError) as info:
        parse_options(text)
    message = str(info.value)
    assert repr(key) in message and fragment in message and "MEMGUARD_OPTIONS" in message
    assert info.value.key == key
    assert isinstance(info.value, ValueError) and isinstance(info.value, memguard.MemguardError)


def test_unknown_key_lists_known_ones_and_suggests() -> None:
    with pytest.raises(OptionsError) as info:
        parse_options("redzon=32")
    message = str(info.value)
    assert "unknown option 'redzon'" in message and "did you mean 'redzone'" in message
    assert "leak_check" in message and "exitcode" in message


@pytest.mark.parametrize("text", ["redzone", "=3", "redzone=32:verbose", 'log_path="/tmp/x'])
def test_malformed_items(text: str) -> None:
    with pytest.raises(OptionsError, match="expected key=value|unterminated"):
        parse_options(text)


def test_resolve_keywords_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "redzone=32:exitcode=7:verbose=1")
    opts = Options.resolve(redzone=64, leak_check="0")
    assert (opts.redzone, opts.exitcode, opts.verbose, opts.leak_check) == (64, 7, True, False)
    assert Options.resolve(env=None).redzone == 16  # env=None ignores the environment
    assert Options.resolve(env="stack_depth=3").stack_depth == 3


def test_resolve_rejects_bad_environment_and_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGUARD_OPTIONS", "exitcode=lots")
    with pytest.raises(OptionsError, match="MEMGUARD_OPTIONS: bad value 'lots' for option 'exitcode'"):
        Options.resolve()
    with pytest.raises(OptionsError, match="unknown option 'nope'"):
        Options.resolve(env=None, nope=1)
    with pytest.raises(OptionsError, match="'redzone'"):
        Options.resolve(env=None, redzone=True)  # a bool is not a number


def test_defaults_match_the_spec_table() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    assert set(fields) == set(OPTION_SPECS)
    for name, spec in OPTION_SPECS.items():
        assert fields[name] == spec.default, name
        assert spec.help and spec.allowed
    defaults = Options()
    assert (defaults.exitcode, defaults.leak_check, defaults.report_format) == (23, True, "text")


def test_heap_kwargs_build_a_heap() -> None:
    opts = Options(redzone=32, quarantine_mb=2, stack_depth=4, on_error="raise", canary="fixed")
    assert opts.heap_kwargs() == {
        "redzone": 32, "quarantine_bytes": 2 << 20, "stack_depth": 4, "on_error": "raise", "canary": "fixed",
            "backend": None,
    }
    heap = memguard.GuardedHeap(**opts.heap_kwargs())
    try:
        assert heap.redzone == 32 and heap.quarantine_bytes == 2 << 20
    finally:
        heap.close()


def test_options_are_frozen_and_validated() -> None:
    opts = Options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.redzone = 32  # type: ignore[misc]
    with pytest.raises(OptionsError):
        Options(redzone=20)
    assert Options(only="a*,b").only == ("a*", "b")
    assert opts.replace(verbose="1").verbose is True


def test_log_file() -> None:
    assert Options().log_file() is None
    assert Options(log_path="stderr").log_file() is None
    assert Options(log_path="/tmp/mg").log_file(42) == "/tmp/mg.42"


_values = {
    "redzone": st.integers(1, 128).map(lambda n: n * 16),
    "quarantine_mb": st.integers(0, 4096),
    "stack_depth": st.integers(0, 256),
    "on_error": st.sampled_from(["report", "raise", "abort"]),
    "leak_check": st.booleans(),
    "exitcode": st.integers(0, 255),
    "log_path": st.sampled_from([None, "/tmp/mg", "C:\\x:y"]),
    "only": st.lists(st.sampled_from(["a*", "pkg.mod", "*/x.py"]), max_size=3).map(tuple),
}


@given(st.fixed_dictionaries({}, optional=_values))
def test_format_options_round_trips(values: dict[str, object]) -> None:
    opts = Options(**values)  # type: ignore[arg-type]
    assert Options.resolve(env=format_options(opts)) == opts
    assert Options.resolve(env=format_options(opts, only_changed=False)) == opts
