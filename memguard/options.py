"""Run-time options: ``MEMGUARD_OPTIONS="key=value:key=value"`` and keyword arguments.

The shape is AddressSanitizer's (``ASAN_OPTIONS``): ``key=value`` items separated by
``:``.  A value may be quoted with ``'`` or ``"`` to contain a ``:`` (a Windows path).
A key given twice keeps the last value.  An unknown key or a bad value raises
:class:`OptionsError` naming the key and what is allowed: nothing is silently ignored.

Every key, its default and its allowed values are listed in :data:`OPTION_SPECS` and
in ``docs/exit-report.md``.  Explicit keyword arguments (``install(redzone=32)``, the
``--option`` flag of ``memguard run``) win over the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Final, Mapping

from memguard.errors import OptionsError
from memguard.native.backend import BACKEND_NAMES

__all__ = [
    "Options",
    "OptionsError",
    "OptionSpec",
    "OPTION_SPECS",
    "ENV_VAR",
    "parse_options",
    "format_options",
    "DEBUG_HEAP_KEYS",
]

#: The environment variable read by :meth:`Options.resolve` and :func:`memguard.install`.
ENV_VAR: Final = "MEMGUARD_OPTIONS"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class OptionSpec:
    """How one option is parsed and documented.

    :ivar name: the key.
    :ivar default: the value when the key is not given.
    :ivar allowed: the allowed values, for people (used in error messages and the docs).
    :ivar help: what the option does.
    :ivar convert: turns a string (or an already typed value) into the option's value;
        raises :class:`ValueError` or :class:`TypeError` on a bad one.
    """

    name: str
    default: Any
    allowed: str
    help: str
    convert: Callable[[Any], Any] = dataclasses.field(repr=False, compare=False)


def _int_in(lo: int, hi: int | None, multiple: int = 1) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError("a bool is not a number")
        if isinstance(value, str):
            value = int(value.strip().replace("_", ""), 10)
        elif not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__}")
        if value < lo or (hi is not None and value > hi) or value % multiple:
            raise ValueError("out of range")
        return int(value)

    return convert


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ValueError("not a boolean")


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        v = value.strip().lower()
        if v not in choices:
            raise ValueError("not an allowed value")
        return v

    return convert


def _backend(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("expected a backend name")
    v = value.strip().lower()
    if not v:
        return None
    if v not in BACKEND_NAMES:
        raise ValueError("not a known backend")
    return v


def _path(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError("expected a path")
    return value or None


def _patterns(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if not all(isinstance(p, str) for p in items):
            raise TypeError("expected strings")
    else:
        raise TypeError("expected a string or a list of strings")
    return tuple(p.strip() for p in items if p.strip())


_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("redzone", 16, "a multiple of 16 from 16 to 2048",
               "canary bytes on each side of every block", _int_in(16, 2048, 16)),
    OptionSpec("quarantine_mb", 64, "an integer >= 0",
               "MiB of freed blocks kept poisoned before their memory is reused", _int_in(0, 1 << 20)),
    OptionSpec("stack_depth", 8, "an integer from 0 to 256",
               "Python frames recorded per allocation and free", _int_in(0, 256)),
    OptionSpec("on_error", "report", "report, raise or abort",
               "on a finding: record it and go on (it is printed at exit), raise at once, or print and abort",
               _choice("report", "raise", "abort")),
    OptionSpec("canary", "keyed", "keyed or fixed",
               "redzone pattern: per-block keyed bytes, or the fixed 0xFD", _choice("keyed", "fixed")),
    OptionSpec("backend", None, f"{', '.join(BACKEND_NAMES[:-1])} or {BACKEND_NAMES[-1]} (default: the platform's)",
               "the native allocator the heap's arenas and large blocks come from (docs/backends.md)", _backend),
    OptionSpec("guard", "off", "off, all or underflow",
               "guard pages: every allocation against a guard page after it (all) or before it (underflow; "
               "with guard_sample, only the sampled ones)", _choice("off", "all", "underflow")),
    OptionSpec("guard_sample", 0, "an integer >= 0",
               "put one allocation in N, at random, against a guard page (0: none)", _int_in(0, None)),
    OptionSpec("guard_max", 4096, "an integer >= 1",
               "the most guarded blocks live at once (beyond: ordinary blocks)", _int_in(1, None)),
    OptionSpec("check_every", 0, "an integer >= 0",
               "check the whole heap every N heap operations (0: never)", _int_in(0, None)),
    OptionSpec("break_on", 0, "an integer >= 0 (an allocation serial)",
               "stop just before allocation number N is made (0: never)", _int_in(0, None)),
    OptionSpec("break_on_action", "raise", "raise or pdb",
               "at break_on: raise memguard.BreakOnAllocation, or enter pdb", _choice("raise", "pdb")),
    OptionSpec("leak_check", True, "0 or 1 (also true/false, yes/no, on/off)",
               "report blocks still live at exit", _bool),
    OptionSpec("inherited_leaks", False, "0 or 1",
               "in a forked child, also report the blocks inherited from the parent as leaks", _bool),
    OptionSpec("exitcode", 23, "an integer from 0 to 255",
               "exit status of `memguard run` when something was found (0: keep the program's)", _int_in(0, 255)),
    OptionSpec("log_path", None, "stderr, stdout, or a path prefix (the report goes to PREFIX.<pid>)",
               "where the exit report goes (default: stderr)", _path),
    OptionSpec("report_format", "text", "text, json or html",
               "LeakSanitizer-style text, the versioned JSON document, or a self-contained HTML page",
               _choice("text", "json", "html")),
    OptionSpec("suppressions", None, "a path to a suppressions file",
               "rules such as leak:<glob> that suppress findings (listed, never dropped)", _path),
    OptionSpec("only", (), "comma-separated glob patterns",
               "keep only findings with a frame whose function, file or module matches", _patterns),
    OptionSpec("verbose", False, "0 or 1",
               "also print a one-line summary when nothing was found", _bool),
    OptionSpec("handle_sigterm", False, "0 or 1",
               "turn SIGTERM into SystemExit(143) so the exit report is still produced", _bool),
    OptionSpec("print_suppressions", True, "0 or 1",
               "print the table of suppressions that matched", _bool),
    OptionSpec("load_plugins", True, "0 or 1",
               "load plugins from the memguard entry-point group onto the process heap", _bool),
    OptionSpec("disable_plugins", (), "comma-separated entry-point names",
               "plugins of the memguard entry-point group not to load (by name, e.g. pool_invariants)", _patterns),
)

#: Every option, by key.
OPTION_SPECS: Final[Mapping[str, OptionSpec]] = {spec.name: spec for spec in _SPECS}
#: The options that are heap arguments of the debugging kind (guard pages, check_every, break_on).
DEBUG_HEAP_KEYS: Final = ("guard", "guard_sample", "guard_max", "check_every", "break_on", "break_on_action")

_FROM_ENV = object()


def _unknown(key: str, source: str) -> OptionsError:
    known = ", ".join(sorted(OPTION_SPECS))
    close = difflib.get_close_matches(key, list(OPTION_SPECS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return OptionsError(f"{source}: unknown option {key!r}{hint}; known options: {known}", key, known)


def _convert(key: str, value: Any, source: str) -> Any:
    spec = OPTION_SPECS.get(key)
    if spec is None:
        raise _unknown(key, source)
    try:
        return spec.convert(value)
    except (TypeError, ValueError):
        raise OptionsError(
            f"{source}: bad value {value!r} for option {key!r}: expected {spec.allowed}", key, spec.allowed
        ) from None


def _split(text: str, source: str) -> list[str]:
    """Split ``k=v:k="v:w"`` into items, honouring quotes."""
    items: list[str] = []
    buf: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == ":":
            items.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise OptionsError(f"{source}: unterminated {quote} quote in {text!r}")
    items.append("".join(buf))
    return [item.strip() for item in items if item.strip()]


def parse_options(text: str, source: str = ENV_VAR) -> dict[str, object]:
    """Parse ``"key=value:key=value"`` into typed, validated values.

    >>> parse_options("redzone=32:leak_check=0")
    {'redzone': 32, 'leak_check': False}

    :param source: names where the text came from, in error messages.
    :raises OptionsError: an item without ``=``, an unknown key or a bad value.
    """
    if not isinstance(text, str):
        raise TypeError(f"options text must be a str, got {type(text).__name__}")
    result: dict[str, object] = {}
    for item in _split(text, source):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionsError(
                f"{source}: expected key=value, got {item!r}", key or None, ", ".join(sorted(OPTION_SPECS))
            )
        result[key] = _convert(key, value.strip(), source)
    return result


@dataclass(frozen=True)
class Options:
    """Every run-time option with its default (see :data:`OPTION_SPECS` for the allowed values)."""

    redzone: int = 16
    quarantine_mb: int = 64
    stack_depth: int = 8
    on_error: str = "report"
    canary: str = "keyed"
    backend: str | None = None
    guard: str = "off"
    guard_sample: int = 0
    guard_max: int = 4096
    check_every: int = 0
    break_on: int = 0
    break_on_action: str = "raise"
    leak_check: bool = True
    inherited_leaks: bool = False
    exitcode: int = 23
    log_path: str | None = None
    report_format: str = "text"
    suppressions: str | None = None
    only: tuple[str, ...] = ()
    verbose: bool = False
    handle_sigterm: bool = False
    print_suppressions: bool = True
    load_plugins: bool = True
    disable_plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            converted = _convert(f.name, value, "Options")
            if converted != value or type(converted) is not type(value):
                object.__setattr__(self, f.name, converted)

    @classmethod
    def resolve(cls, env: str | None = _FROM_ENV, **overrides: Any) -> Options:  # type: ignore[assignment]
        """Options from ``env`` (default: ``$MEMGUARD_OPTIONS``) overridden by keyword arguments.

        Keyword values may be typed (``redzone=32``) or strings as in the environment
        (``redzone="32"``).  Pass ``env=None`` to ignore the environment.

        :raises OptionsError: unknown key or bad value, from either source.
        """
        if env is _FROM_ENV:
            env = os.environ.get(ENV_VAR)
        values: dict[str, object] = {}
        if env:
            values.update(parse_options(env, ENV_VAR))
        for key, value in overrides.items():
            values[key] = _convert(key, value, "option")
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Options:
        """A copy with some options changed (values validated like :meth:`resolve`)."""
        values = {k: _convert(k, v, "option") for k, v in changes.items()}
        return dataclasses.replace(self, **values)

    def heap_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`memguard.GuardedHeap` (the debugging ones only when set)."""
        kwargs: dict[str, Any] = {
            "redzone": self.redzone,
            "quarantine_bytes": self.quarantine_mb << 20,
            "stack_depth": self.stack_depth,
            "on_error": self.on_error,
            "canary": self.canary,
            "backend": self.backend,
        }
        for key in DEBUG_HEAP_KEYS:
            value = getattr(self, key)
            if value != OPTION_SPECS[key].default:
                kwargs[key] = value
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``only`` and ``disable_plugins`` as lists)."""
        d = dataclasses.asdict(self)
        d["only"] = list(self.only)
        d["disable_plugins"] = list(self.disable_plugins)
        return d

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults."""
        return {k: v for k, v in dataclasses.asdict(self).items() if OPTION_SPECS[k].default != v}

    def log_file(self, pid: int | None = None) -> str | None:
        """The file the exit report goes to (``PREFIX.<pid>``), or ``None`` for stderr/stdout."""
        if self.log_path in (None, "stderr", "stdout"):
            return None
        return f"{self.log_path}.{os.getpid() if pid is None else pid}"


def format_options(options: Options | Mapping[str, Any], only_changed: bool = True) -> str:
    """The ``key=value:key=value`` text for ``options`` (parsable by :func:`parse_options`)."""
    if isinstance(options, Options):
        values = options.changed() if only_changed else dataclasses.asdict(options)
    else:
        values = dict(options)
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif value is None:
            text = ""
        elif isinstance(value, (tuple, list)):
            text = ",".join(value)
        else:
            text = str(value)
        if ":" in text or "'" in text:
            text = f'"{text}"'
        parts.append(f"{key}={text}")
    return ":".join(parts)
