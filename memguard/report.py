"""Findings: the :class:`Report` value and its AddressSanitizer-style text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from memguard.kinds import get_kind
from memguard.stacks import Frame, Stack, format_stack

__all__ = ["Report", "hexdump"]

_RULE = "=" * 65


def hexdump(data: bytes, start: int, marks: range | None = None, width: int = 16) -> str:
    """Hex dump of ``data`` (which begins at address ``start``).

    Bytes whose address falls in ``marks`` are shown in brackets, the way ASan's
    shadow dump brackets the faulting byte.
    """
    lines = []
    for row in range(0, len(data), width):
        chunk = data[row : row + width]
        cells = []
        for i, byte in enumerate(chunk):
            addr = start + row + i
            cells.append(f"[{byte:02x}]" if marks is not None and addr in marks else f" {byte:02x} ")
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"  0x{start + row:012x}:{''.join(cells)}  |{text}|")
    return "\n".join(lines)


@dataclass(frozen=True)
class Report:
    """One finding.

    :ivar kind: ``heap-buffer-overflow``, ``heap-buffer-underflow``, ``heap-use-after-free``,
        ``double-free``, ``bad-free``, ``memory-leak``, ``heap-header-corruption``, or a kind a
        plugin or another checker defines (``refcount-underflow``, ``plugin-error`` …).
    :ivar address: the block's user address (for a ``bad-free`` with no containing block, the
        address that was passed).
    :ivar size: the block's size in bytes (0 when there is no block).
    :ivar offset: relative to ``address``: of the first bad byte, or of the pointer for an
        interior free; negative before the start of the block.
    :ivar alloc_stack: where the block was allocated, most recent call first.
    :ivar free_stack: where it was freed (for a double free, the first free).
    :ivar stack: where the finding was detected.
    :ivar expected: the bytes memguard expected at the bad span.
    :ivar found: the bytes it found there.
    :ivar thread: the thread that detected it, as ``"name (T<ident>)"``.
    :ivar message: a one-line description.
    :ivar serial: the block's allocation number (1 for the first allocation of the heap).
    :ivar memory: bytes around the bad span, for the hexdump.
    :ivar memory_start: the address of ``memory[0]``.
    :ivar count: how many bytes were bad (or objects, for a leak).
    :ivar extra: anything else a checker wants to attach (JSON-ready values).
    :ivar pid: the process that made the finding.
    """

    kind: str
    address: int = 0
    size: int = 0
    offset: int = 0
    alloc_stack: Stack = ()
    free_stack: Stack = ()
    stack: Stack = ()
    expected: bytes = b""
    found: bytes = b""
    thread: str = ""
    message: str = ""
    serial: int = 0
    memory: bytes = b""
    memory_start: int = 0
    count: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    pid: int = field(default_factory=os.getpid, compare=False)

    @property
    def bad_address(self) -> int:
        """``address + offset``: the first bad byte, or the pointer of a bad free."""
        return self.address + self.offset

    def headline(self) -> str:
        """The one line that names the finding."""
        if self.message:
            return f"{self.kind}: {self.message}"
        return f"{self.kind} on address 0x{self.bad_address:x}"

    def location(self) -> str:
        """One line for the summary: the line that made the access, for a finding caught at the
        access (a guard page's, with an ``access`` in :attr:`extra`); else where the block came
        from, the first allocation frame (or the detection frame)."""
        stack = self.stack if "access" in self.extra and self.stack else (self.alloc_stack or self.stack)
        return str(stack[0]) if stack else "<unknown>"

    def __str__(self) -> str:
        kind = get_kind(self.kind)
        acquired, released = kind.labels if kind is not None else ("allocated here:", "freed here:")
        where = f" on address 0x{self.bad_address:x}" if self.bad_address or self.size or self.serial else ""
        lines = [_RULE, f"=={self.pid}==ERROR: memguard: {self.kind}{where}"]
        if self.message:
            lines.append(self.message)
        if self.stack:
            lines.append(f"detected by thread {self.thread or 'T?'} here:")
            lines.append(format_stack(self.stack))
        if self.size or self.serial:
            end = self.address + self.size
            lines.append(f"0x{self.bad_address:x} is {self._where()} {self.size}-byte region [0x{self.address:x},0x{end:x})")
        if self.alloc_stack or self.serial:
            if self.serial:
                lines.append(f"allocated (allocation #{self.serial}) here:")
            elif acquired:
                lines.append(acquired)
            lines.append(format_stack(self.alloc_stack))
        if self.free_stack:
            lines.append("previously freed here:" if self.kind == "double-free" else released)
            lines.append(format_stack(self.free_stack))
        if self.expected or self.found:
            lines.append(f"expected: {self.expected[:32].hex(' ')}{' …' if len(self.expected) > 32 else ''}")
            lines.append(f"found:    {self.found[:32].hex(' ')}{' …' if len(self.found) > 32 else ''}")
        if self.memory:
            marks = range(self.bad_address, self.bad_address + max(1, self.count))
            lines.append(f"Memory around 0x{self.bad_address:x} (bad bytes in brackets):")
            lines.append(hexdump(self.memory, self.memory_start, marks))
        lines.append(f"SUMMARY: memguard: {self.kind} {self.location()}")
        return "\n".join(lines)

    def _where(self) -> str:
        off = self.offset
        if off < 0:
            return f"located {-off} bytes to the left of"
        if off >= self.size:
            return f"located {off - self.size} bytes to the right of"
        return f"located {off} bytes inside of"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as hex strings, stacks as lists of frames)."""
        return {
            "kind": self.kind,
            "address": self.address,
            "size": self.size,
            "offset": self.offset,
            "alloc_stack": [f.to_dict() for f in self.alloc_stack],
            "free_stack": [f.to_dict() for f in self.free_stack],
            "stack": [f.to_dict() for f in self.stack],
            "expected": self.expected.hex(),
            "found": self.found.hex(),
            "thread": self.thread,
            "message": self.message,
            "serial": self.serial,
            "memory": self.memory.hex(),
            "memory_start": self.memory_start,
            "count": self.count,
            "extra": dict(self.extra),
            "pid": self.pid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output."""

        def stack(items: Any) -> Stack:
            return tuple(Frame(str(f["filename"]), int(f["lineno"]), str(f["name"])) for f in items or ())

        return cls(
            kind=str(data["kind"]),
            address=int(data.get("address", 0)),
            size=int(data.get("size", 0)),
            offset=int(data.get("offset", 0)),
            alloc_stack=stack(data.get("alloc_stack")),
            free_stack=stack(data.get("free_stack")),
            stack=stack(data.get("stack")),
            expected=bytes.fromhex(data.get("expected", "")),
            found=bytes.fromhex(data.get("found", "")),
            thread=str(data.get("thread", "")),
            message=str(data.get("message", "")),
            serial=int(data.get("serial", 0)),
            memory=bytes.fromhex(data.get("memory", "")),
            memory_start=int(data.get("memory_start", 0)),
            count=int(data.get("count", 0)),
            extra=dict(data.get("extra") or {}),
            pid=int(data.get("pid", 0)),
        )
