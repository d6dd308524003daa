"""Suppressions (``leak:<pattern>`` …) and the ``only=`` allow-list.

A suppressions file has one rule per line::

    # third-party code we cannot fix
    leak:vendor_cache          # a function name
    leak:*/site-packages/foo/* # a file
    overflow:legacy.parser.*   # a module (and everything in it)
    double-free:cleanup

A rule ``<kind>:<pattern>`` matches a finding of that kind when **any frame** of its
stacks (allocation, free and detection stacks for a report; the allocation stack for a
leak group) matches the glob ``pattern`` (:func:`fnmatch.fnmatchcase`) against one of:

* the function: its qualified name (``Cache.fill``) or its last part (``fill``);
* the file: its full path or its base name (``helper.py``);
* the module: its dotted name or any package prefix of it (``pkg``, ``pkg.sub``, ``pkg.sub.mod``).

Suppressed findings are counted and listed (:class:`Suppressed`), never dropped.

The allow-list (:class:`Only`, option ``only=``) keeps the findings that have a frame
matching one of its patterns by the same rules, and sets the others aside.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar, Union

from memguard.errors import SuppressionsError
from memguard.leaks import LeakGroup
from memguard.kinds import rule_kind, rule_names
from memguard.report import Report
from memguard.stacks import Frame, Stack

__all__ = [
    "Rule",
    "Suppressions",
    "Suppressed",
    "Only",
    "SuppressionsError",
    "frame_candidates",
    "format_suppression_table",
    "module_of",
    "summarize",
]

Finding = Union[Report, LeakGroup]
F = TypeVar("F", Report, LeakGroup)

_module_cache: dict[str, str] = {}
_module_cache_size = -1


def _refresh_modules() -> None:
    global _module_cache_size
    modules = dict(sys.modules)
    if len(modules) == _module_cache_size:
        return
    for name, mod in modules.items():
        path = getattr(mod, "__file__", None)
        if isinstance(path, str):
            _module_cache.setdefault(os.path.normcase(os.path.abspath(path)), name)
    _module_cache_size = len(modules)


def module_of(filename: str) -> str:
    """The dotted module name of a source file.

    From :data:`sys.modules` when the module is loaded; otherwise guessed from the path
    (relative to ``site-packages`` or a :data:`sys.path` entry, else the file's stem).
    ``""`` for pseudo-files such as ``<string>``.
    """
    if not filename or filename.startswith("<"):
        return ""
    _refresh_modules()
    key = os.path.normcase(os.path.abspath(filename))
    name = _module_cache.get(key)
    if name is not None and name != "__main__":
        return name
    path = key
    roots = [os.path.normcase(os.path.abspath(p)) for p in sys.path if p]
    best = ""
    for marker in (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep):
        if marker in path:
            best = path.rsplit(marker, 1)[1]
    if not best:
        for root in roots:
            if path.startswith(root + os.sep) and (not best or len(path) - len(root) < len(best)):
                best = path[len(root) + 1 :]
    if not best:
        best = os.path.basename(path)
    stem = os.path.splitext(best)[0]
    parts = [p for p in stem.split(os.sep) if p]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def frame_candidates(frame: Frame) -> tuple[str, ...]:
    """The strings a pattern is matched against for ``frame`` (see the module docstring)."""
    names = [frame.name, frame.name.rsplit(".", 1)[-1], frame.filename, os.path.basename(frame.filename)]
    module = module_of(frame.filename)
    if module:
        parts = module.split(".")
        names.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
    return tuple(dict.fromkeys(n for n in names if n))


def _stack_matches(stack: Stack, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(c, pattern) for frame in stack for c in frame_candidates(frame))


def _stacks(item: Finding) -> tuple[Stack, ...]:
    if isinstance(item, LeakGroup):
        return (item.stack,)
    return (item.alloc_stack, item.free_stack, item.stack)


def _kind(item: Finding) -> str:
    return "memory-leak" if isinstance(item, LeakGroup) else item.kind


@dataclass(frozen=True)
class Rule:
    """One suppression rule.

    :ivar kind: the report kind it applies to (``memory-leak`` for ``leak:``).
    :ivar pattern: the glob.
    :ivar text: the rule as written (``leak:vendor_*``).
    :ivar filename: the file it came from.
    :ivar lineno: its line in that file.
    """

    kind: str
    pattern: str
    text: str
    filename: str = "<string>"
    lineno: int = 0

    def matches(self, item: Finding) -> bool:
        """Whether this rule suppresses ``item`` (same kind, and a frame matches)."""
        return _kind(item) == self.kind and any(_stack_matches(s, self.pattern) for s in _stacks(item))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Suppressed:
    """A finding set aside by a rule: kept for the record, not counted as a failure."""

    item: Report | LeakGroup
    rule: Rule

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: the rule (with where it was written) and the finding."""
        return {
            "rule": self.rule.text,
            "rule_file": self.rule.filename,
            "rule_line": self.rule.lineno,
            "finding": self.item.to_dict(),
        }


@dataclass(frozen=True)
class Suppressions:
    """A parsed suppressions file."""

    rules: tuple[Rule, ...] = ()
    filename: str = "<string>"

    @classmethod
    def parse(cls, text: str, filename: str = "<string>") -> Suppressions:
        """Parse suppressions text; :class:`SuppressionsError` names ``file:line`` of a bad line."""
        if not isinstance(text, str):
            raise TypeError(f"suppressions text must be a str, got {type(text).__name__}")
        if text.startswith("\ufeff"):  # a byte order mark, as some editors write at the start of a UTF-8 file
            text = text[1:]
        rules = []
        expected = "expected <kind>:<pattern>, for example leak:my_function"
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            hash_at = line.find(" #")
            if hash_at < 0:
                hash_at = line.find("\t#")
            if hash_at >= 0:
                line = line[:hash_at].rstrip()
            kind, sep, pattern = line.partition(":")
            kind, pattern = kind.strip(), pattern.strip()
            where = f"{filename}:{lineno}"
            if not sep:
                raise SuppressionsError(f"{where}: {expected}; got {raw.strip()!r}", filename, lineno)
            report_kind = rule_kind(kind)
            if report_kind is None:
                allowed = ", ".join(rule_names())
                raise SuppressionsError(
                    f"{where}: unknown kind {kind!r} in {raw.strip()!r}; {expected} and kind one of: {allowed} "
                    "(a plugin's own kinds are known once it registered them with memguard.register_kind)",
                    filename, lineno,
                )
            if not pattern:
                raise SuppressionsError(
                    f"{where}: empty pattern after {kind + ':'!r}; {expected}", filename, lineno
                )
            rules.append(Rule(report_kind, pattern, f"{kind}:{pattern}", filename, lineno))
        return cls(tuple(rules), filename)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Suppressions:
        """Read and parse a suppressions file (UTF-8)."""
        name = os.fspath(path)
        try:
            with open(name, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SuppressionsError(f"cannot read suppressions file {name!r}: {exc}", name) from None
        return cls.parse(text, name)

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, item: Finding) -> Rule | None:
        """The first rule that suppresses ``item`` (a :class:`Report` or a :class:`LeakGroup`)."""
        for rule in self.rules:
            if rule.matches(item):
                return rule
        return None

    def is_suppressed(self, item: Finding) -> bool:
        """Whether any rule suppresses ``item``."""
        return self.match(item) is not None

    def apply(self, items: Iterable[F]) -> tuple[list[F], list[Suppressed]]:
        """Split ``items`` into ``(kept, suppressed)``, keeping their order."""
        kept: list[F] = []
        suppressed: list[Suppressed] = []
        for item in items:
            rule = self.match(item)
            if rule is None:
                kept.append(item)
            else:
                suppressed.append(Suppressed(item, rule))
        return kept, suppressed


@dataclass(frozen=True)
class Only:
    """The allow-list: keep only findings with a frame matching one of ``patterns``.

    An empty allow-list keeps everything.
    """

    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.patterns, str):
            object.__setattr__(self, "patterns", (self.patterns,))
        if not all(isinstance(p, str) and p for p in self.patterns):
            raise ValueError(f"only= patterns must be non-empty strings, got {self.patterns!r}")

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, item: Finding) -> bool:
        """Whether ``item`` is in scope (always true for an empty allow-list)."""
        if not self.patterns:
            return True
        return any(_stack_matches(s, p) for s in _stacks(item) for p in self.patterns)

    def apply(self, items: Iterable[F]) -> tuple[list[F], list[F]]:
        """Split ``items`` into ``(kept, out_of_scope)``, keeping their order."""
        kept: list[F] = []
        out: list[F] = []
        for item in items:
            (kept if self.matches(item) else out).append(item)
        return kept, out


def summarize(suppressed: Sequence[Suppressed]) -> list[tuple[Rule, int, int]]:
    """``(rule, objects, bytes)`` per rule that matched, in rule order."""
    totals: dict[Rule, list[int]] = {}
    for s in suppressed:
        t = totals.setdefault(s.rule, [0, 0])
        if isinstance(s.item, LeakGroup):
            t[0] += s.item.count
            t[1] += s.item.size
        else:
            t[0] += 1
            t[1] += s.item.size
    order = sorted(totals, key=lambda r: (r.filename, r.lineno))
    return [(r, totals[r][0], totals[r][1]) for r in order]


def format_suppression_table(rows: Iterable[tuple[str, int, int]]) -> str:
    """The "Suppressions used:" table: one ``(rule as written, objects, bytes)`` row per rule."""
    rule = "-" * 53
    lines = [rule, "Suppressions used:", "  count      bytes template"]
    for text, count, size in rows:
        lines.append(f"{count:7d} {size:10d} {text}")
    lines.append(rule)
    return "\n".join(lines)
