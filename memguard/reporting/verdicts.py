"""Pure pass/fail decisions for the pytest plugin (no pytest, no heap access).

The pytest wiring (:mod:`memguard.pytest_plugin`) gathers findings and measurements;
this module decides what they mean and how they read: whether a test fails, the
one-line reason, the ``memguard`` section text, the growth table, the run summary.
Everything here takes and returns plain values, so it is tested without pytest.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from memguard.kinds import is_leak
from memguard.leaks import LeakGroup, format_leaks
from memguard.report import Report
from memguard.stacks import Frame, Stack, hide_framework_frames

__all__ = [
    "LEAK_MODES",
    "HEAP_OPTION_KEYS",
    "Verdict",
    "GrowthVerdict",
    "check_leak_mode",
    "parse_bool",
    "parse_size",
    "first_set",
    "plural",
    "describe_leaks",
    "describe_report",
    "cut_at_runner",
    "trim_report",
    "trim_group",
    "judge",
    "judge_growth",
    "summarize",
    "format_summary",
]

#: What ``--memguard-leaks`` / ``leaks=`` accept.
LEAK_MODES: tuple[str, ...] = ("fail", "warn", "ignore")

#: The :class:`memguard.options.Options` keys that configure a heap (allowed in the marker).
HEAP_OPTION_KEYS: tuple[str, ...] = (
    "redzone", "quarantine_mb", "stack_depth", "on_error", "canary", "backend",
    "guard", "guard_sample", "guard_max", "check_every", "break_on", "break_on_action",
)


def check_leak_mode(value: object, source: str) -> str:
    """``value`` as a leak mode; :class:`ValueError` naming ``source`` otherwise."""
    if isinstance(value, str) and value.strip().lower() in LEAK_MODES:
        return value.strip().lower()
    raise ValueError(f"{source}: expected one of {', '.join(LEAK_MODES)}, got {value!r}")


def parse_bool(value: object, source: str) -> bool:
    """An ini-style boolean (``1/0``, ``true/false``, ``yes/no``, ``on/off``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{source}: expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(value: object, source: str) -> int:
    """A byte count: an int, or a string such as ``"64 KiB"`` / ``"1MB"`` / ``"4096"``."""
    if isinstance(value, bool):
        raise ValueError(f"{source}: expected a size in bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{source}: a size must be >= 0, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*", value.lower())
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2) or ""])
    raise ValueError(f"{source}: expected a size such as 4096, '64 KiB' or '1 MB', got {value!r}")


def first_set(*values: Any) -> Any:
    """The first value that is not ``None`` (the precedence chain), else ``None``."""
    for value in values:
        if value is not None:
            return value
    return None


def plural(n: int, word: str) -> str:
    """``"1 byte"`` / ``"72 bytes"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ----------------------------------------------------------------------------- text
def describe_leaks(groups: Sequence[LeakGroup]) -> str:
    """One line: ``"leaked 72 bytes in 3 blocks"``."""
    size = sum(g.size for g in groups)
    count = sum(g.count for g in groups)
    return f"leaked {plural(size, 'byte')} in {plural(count, 'block')}"


def describe_report(report: Report) -> str:
    """One line naming a finding: ``"heap-buffer-overflow: 1 byte past a 16-byte block"``."""
    kind, n, count = report.kind, report.size, max(report.count, 1)
    if kind == "heap-buffer-overflow" and n:
        beyond = report.offset - n
        at = f" (starting {plural(beyond, 'byte')} after its end)" if beyond > 0 else ""
        return f"{kind}: {plural(count, 'byte')} past a {n}-byte block{at}"
    if kind == "heap-buffer-underflow" and n:
        return f"{kind}: {plural(count, 'byte')} before a {n}-byte block"
    if kind == "heap-use-after-free" and n:
        return f"{kind}: {plural(count, 'byte')} written into a freed {n}-byte block"
    if kind == "double-free" and n:
        return f"{kind}: a {n}-byte block was freed twice"
    if kind == "refcount-leak" and report.message:
        return f"{kind}: {report.message.rstrip(':').removesuffix(' at')}"
    return report.headline()


def _is_internal(frame: Frame, internal_dirs: Sequence[str]) -> bool:
    return frame.filename.startswith(tuple(internal_dirs))


def cut_at_runner(stack: Stack, internal_dirs: Sequence[str]) -> Stack:
    """Drop the test runner's frames: keep the stack up to the first frame in ``internal_dirs``.

    Stacks are most recent call first, so what is kept is the user's code down to the
    test function; pytest and pluggy frames below it are noise, and so are framework
    frames above it (``importlib`` importing a module that allocates).  A stack that
    starts inside the runner (an allocation from a fixture machinery frame) is kept
    whole.  With no ``internal_dirs`` (full stacks asked for) nothing is dropped.
    """
    if not internal_dirs:
        return stack
    for i, frame in enumerate(stack):
        if _is_internal(frame, internal_dirs):
            return hide_framework_frames(stack[:i]) if i else stack
    return hide_framework_frames(stack)


def trim_report(report: Report, internal_dirs: Sequence[str]) -> Report:
    """``report`` with its three stacks trimmed by :func:`cut_at_runner`."""
    return replace(
        report,
        alloc_stack=cut_at_runner(report.alloc_stack, internal_dirs),
        free_stack=cut_at_runner(report.free_stack, internal_dirs),
        stack=cut_at_runner(report.stack, internal_dirs),
    )


def trim_group(group: LeakGroup, internal_dirs: Sequence[str]) -> LeakGroup:
    """``group`` with its stack trimmed by :func:`cut_at_runner`."""
    return replace(group, stack=cut_at_runner(group.stack, internal_dirs))


# ----------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Verdict:
    """What memguard concluded about one test.

    :ivar failed: the test must fail.
    :ivar warned: leaks were found but ``leaks="warn"``.
    :ivar reason: one line (``"leaked 72 bytes in 3 blocks"``), empty when clean.
    :ivar section: the full text for the ``memguard`` report section, empty when clean.
    :ivar reports: the corruption findings (stacks trimmed).
    :ivar leaks: the leak groups (stacks trimmed), also when ignored or warned.
    :ivar suppressed: how many findings suppressions removed.
    """

    failed: bool = False
    warned: bool = False
    reason: str = ""
    section: str = ""
    reports: tuple[Report, ...] = ()
    leaks: tuple[LeakGroup, ...] = ()
    suppressed: int = 0

    @property
    def clean(self) -> bool:
        """Nothing to say."""
        return not (self.reports or self.leaks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``findings`` and ``leaks``)."""
        return {
            "failed": self.failed,
            "warned": self.warned,
            "reason": self.reason,
            "findings": [r.to_dict() for r in self.reports],
            "leaks": [g.to_dict() for g in self.leaks],
            "leaked_bytes": sum(g.size for g in self.leaks),
            "leaked_blocks": sum(g.count for g in self.leaks),
            "suppressed": self.suppressed,
        }


def judge(
    reports: Iterable[Report],
    leaks: Iterable[LeakGroup],
    leak_mode: str,
    internal_dirs: Sequence[str] = (),
    suppressed: int = 0,
) -> Verdict:
    """Decide one test: corruption always fails; leaks fail, warn or are ignored by ``leak_mode``.

    Reports of a leak kind (``refcount-leak``) count as leaks.  With ``leak_mode="ignore"``
    leaks are dropped from the verdict entirely.
    """
    check_leak_mode(leak_mode, "leak_mode")
    reps = [trim_report(r, internal_dirs) for r in reports]
    groups = tuple(trim_group(g, internal_dirs) for g in leaks)
    if leak_mode == "ignore":
        reps = [r for r in reps if not is_leak(r.kind)]
        groups = ()
    if not reps and not groups:
        return Verdict(suppressed=suppressed)
    corrupt = [r for r in reps if not is_leak(r.kind)]
    leaky = [r for r in reps if is_leak(r.kind)]
    reasons: list[str] = [describe_report(r) for r in corrupt + leaky]
    if groups:
        reasons.append(describe_leaks(groups))
    has_leaks = bool(groups or leaky)
    failed = bool(corrupt) or (has_leaks and leak_mode == "fail")
    warned = has_leaks and leak_mode == "warn"
    reason = reasons[0] if len(reasons) == 1 else f"{reasons[0]} (and {plural(len(reasons) - 1, 'more finding')})"
    parts = [str(r) for r in corrupt + leaky]
    if groups:
        parts.append(format_leaks(groups))
    return Verdict(failed, warned, reason, "\n\n".join(parts), tuple(corrupt + leaky), groups, suppressed)


# ----------------------------------------------------------------------------- growth
@dataclass(frozen=True)
class GrowthVerdict:
    """The decision of a ``memguard_growth`` check.

    :ivar failed: growth was steady and over the limit.
    :ivar reason: one line.
    :ivar table: the per-run table.
    :ivar growth: bytes grown from the end of the warm-up to the last run.
    :ivar samples: the measurements, one before any run, then one after each run.
    """

    failed: bool
    reason: str
    table: str
    growth: int
    samples: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"failed": self.failed, "reason": self.reason, "growth": self.growth, "samples": list(self.samples)}


def judge_growth(samples: Sequence[int], max_bytes: int, warmup: int, metric: str = "heap") -> GrowthVerdict:
    """Decide a growth check from ``samples`` (``samples[0]`` before any run, then one per run).

    The baseline is the measurement after the last warm-up run.  The test fails when the
    memory grew by more than ``max_bytes`` from the baseline to the last run *and* the
    growth is steady: at least two thirds of the measured runs grew (a one-off jump, a
    cache filling once, does not fail the test).
    """
    if len(samples) < warmup + 2:
        raise ValueError(f"need at least warmup + 2 samples, got {len(samples)}")
    base = samples[warmup]
    measured = samples[warmup + 1 :]
    deltas = [b - a for a, b in zip(samples[warmup:], measured)]
    growing = sum(1 for d in deltas if d > 0)
    need = math.ceil(len(deltas) * 2 / 3)
    growth = measured[-1] - base
    steady = growing >= need
    failed = growth > max_bytes and steady
    rows = [f"  {'run':>6} {'phase':<8} {metric + ' bytes':>16} {'change':>12}"]
    prev = None
    for i, value in enumerate(samples):
        phase = "before" if i == 0 else ("warm-up" if i <= warmup else "measured")
        change = "" if prev is None else f"{value - prev:+d}"
        rows.append(f"  {i:>6} {phase:<8} {value:>16} {change:>12}")
        prev = value
    verdict = "steady" if steady else "not steady"
    reason = (
        f"native memory grew by {plural(growth, 'byte')} over {plural(len(deltas), 'run')} "
        f"({growing} of {len(deltas)} runs grew: {verdict}); the limit is {plural(max_bytes, 'byte')}"
    )
    return GrowthVerdict(failed, reason, "\n".join(rows), growth, tuple(samples))


# ----------------------------------------------------------------------------- summary
def _site(stack: Sequence[Mapping[str, Any]]) -> str:
    if not stack:
        return "<no Python frames>"
    f = stack[0]
    return f"{f['filename']}:{f['lineno']} in {f['name']}"


def summarize(records: Iterable[Mapping[str, Any]], session: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Totals over per-test records (each one a :meth:`Verdict.to_dict` plus ``nodeid``).

    :returns: ``tests_checked``, ``tests_failed``, ``tests_warned``, ``findings_by_kind``,
        ``leaked_bytes``, ``leaked_blocks``, ``top_sites`` (site, bytes, blocks, tests),
        ``growth_failed`` and ``session_findings``.
    """
    kinds: Counter[str] = Counter()
    sites: dict[str, list[Any]] = {}
    checked = failed = warned = growth_failed = 0
    leaked_bytes = leaked_blocks = 0
    for rec in records:
        checked += 1
        failed += bool(rec.get("failed"))
        warned += bool(rec.get("warned"))
        growth_failed += bool((rec.get("growth") or {}).get("failed"))
        for f in rec.get("findings", ()):
            kinds[f["kind"]] += 1
        for g in rec.get("leaks", ()):
            kinds["memory-leak"] += 1
            leaked_bytes += g["size"]
            leaked_blocks += g["count"]
            entry = sites.setdefault(_site(g["stack"]), [0, 0, set()])
            entry[0] += g["size"]
            entry[1] += g["count"]
            entry[2].add(rec.get("nodeid", ""))
    session = session or {}
    for f in session.get("findings", ()):
        kinds[f["kind"]] += 1
    for g in session.get("leaks", ()):
        kinds["memory-leak"] += 1
    top = sorted(sites.items(), key=lambda kv: (-kv[1][0], kv[0]))[:5]
    return {
        "tests_checked": checked,
        "tests_failed": failed,
        "tests_warned": warned,
        "growth_failed": growth_failed,
        "findings_by_kind": dict(sorted(kinds.items())),
        "leaked_bytes": leaked_bytes,
        "leaked_blocks": leaked_blocks,
        "top_sites": [{"site": s, "bytes": v[0], "blocks": v[1], "tests": len(v[2])} for s, v in top],
        "session_findings": len(session.get("findings", ())) + len(session.get("leaks", ())),
    }


def format_summary(totals: Mapping[str, Any], relto: Callable[[str], str] = os.path.normpath) -> list[str]:
    """The lines of the terminal summary section."""
    lines = [
        f"tests checked: {totals['tests_checked']}; failed by memguard: {totals['tests_failed']}"
        + (f"; warned: {totals['tests_warned']}" if totals["tests_warned"] else "")
    ]
    kinds = totals["findings_by_kind"]
    lines.append("findings: " + (", ".join(f"{k}: {v}" for k, v in kinds.items()) if kinds else "none"))
    if totals.get("session_findings"):
        lines.append(f"outside any test (end of session): {plural(totals['session_findings'], 'finding')}")
    if totals["top_sites"]:
        lines.append("top leaking sites:")
        for s in totals["top_sites"]:
            lines.append(
                f"  {plural(s['bytes'], 'byte')} in {plural(s['blocks'], 'block')} "
                f"({plural(s['tests'], 'test')}) at {relto(s['site'])}"
            )
    return lines
