"""Native strings on the guarded heap: interning, refcounted and copy-on-write (Movian's three designs).

* :class:`StringTable` interns strings (``strtab_get`` / ``strtab_release``): one shared,
  NUL-terminated copy per distinct string, each in a heap block of exactly ``length + 1``
  bytes, refcounted, behind a lock per table.
* :class:`RString` is a refcounted string (``rstr``: alloc -> 1, ``dup`` -> +1,
  ``release`` -> -1, freed at zero).
* :class:`CowString` is a copy-on-write string (``cow_string_create/copy/modify/release``).

Every count is a reference tracked by a :class:`~memguard.RefAudit` (``table.audit``,
``r.audit``), so ``audit.format_leaks()`` shows who holds what, in ``ref_tracker``'s shape,
and plugins implementing ``memguard_refcount`` see every change (``track``, ``inc``,
``dec``, ``release``).  A table's entries are also regions of a :class:`~memguard.MemPool`
(``table.pool``): a new entry reaches ``memguard_pool_alloc``, a removed one
``memguard_pool_free``.

The bugs these designs hide in C are findings, each with its stacks:

* ``strtab-over-release``: a release of a string that is not interned (never, or no longer:
  with the stack of the release that freed it), or a second release of the same handle;
* ``strtab-leak``: entries still referenced at :meth:`StringTable.close`, one report per
  acquiring stack (``'hello'@0x… has 1/2 users at:``);
* ``strtab-mutation``: the bytes of an interned string changed (verified on every
  intern hit, release, removal and ``check()``; the bytes are then restored);
* ``cow-shared-write``: a copy-on-write buffer changed while shared (verified at
  ``check()``, ``copy()``, ``modify()`` and ``release()``; the bytes are then restored);
* ``rstr-underflow``: a release at zero (the count saturates, as ``refcount_t``);
  ``rstr-use-after-release``: a ``dup()`` at zero.  A write into a string's storage after
  its final release is the heap's ``heap-use-after-free``.
"""

from __future__ import annotations

import sys
import threading
import weakref
from types import FrameType
from dataclasses import dataclass, field
from typing import Any, Container, Iterator, Union

from memguard.allocators.mempool import MemPool
from memguard.arguments import int_arg
from memguard.checker import Checker
from memguard.errors import HeapClosedError
from memguard.findings import bad_span, memory_window, thread_label
from memguard.heap.guarded import GuardedHeap
from memguard.heapmaps import HeapMap, MapBlock, MapRow, site_text
from memguard.kinds import error_for
from memguard.refaudit import Ref, RefAudit
from memguard.report import Report
from memguard.stacks import Stack, StackTable

__all__ = ["StringTable", "InternedString", "StringTableStats", "RString", "CowString", "MAX_STRING"]

#: The longest string (in bytes) these types store.
MAX_STRING = 1 << 30
#: Freed entries remembered (by address and by value) for over-release reports.
_MAX_GONE = 4096
_getframe = sys._getframe

StrLike = Union[str, bytes, bytearray, memoryview]


def _encode(value: object, what: str = "value") -> bytes:
    """``value`` as the bytes stored (a ``str`` as UTF-8); no NUL inside, at most :data:`MAX_STRING`."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"{what} contains a NUL byte; a C string cannot hold one")
    if len(data) > MAX_STRING:
        raise ValueError(f"{what} has {len(data)} bytes; at most {MAX_STRING} are stored")
    return data


def _label(data: bytes, limit: int = 24) -> str:
    """A short printable form of a string for report labels."""
    text = data[:limit].decode("utf-8", "backslashreplace")
    return repr(text + ("…" if len(data) > limit else ""))


def _changed(kind: str, address: int, expected: bytes, found: bytes, view: memoryview, message: str,
             alloc_stack: Stack, stack: Stack, extra: dict[str, Any]) -> Report:
    """A report for bytes that differ from what they must be (the bytes are then restored)."""
    first, last = bad_span(found, expected) or (0, len(found) - 1)
    memory, mstart = memory_window(view, address, address, address + len(found), address + first)
    return Report(
        kind=kind, address=address, size=len(found), offset=first, alloc_stack=alloc_stack, stack=stack,
        thread=thread_label(), expected=expected[first : last + 1], found=found[first : last + 1],
        memory=memory, memory_start=mstart, count=last - first + 1,
        message=f"{message}: {last - first + 1} byte(s) changed at offset {first}", extra=extra,
    )


_audits: weakref.WeakKeyDictionary[GuardedHeap, RefAudit] = weakref.WeakKeyDictionary()
_audits_lock = threading.Lock()
_shared: list[GuardedHeap] = []


def _shared_heap() -> GuardedHeap:
    """The heap of the refcounted and copy-on-write strings created with ``heap=None``."""
    with _audits_lock:
        if not _shared or _shared[0].closed:
            _shared[:] = [GuardedHeap(name="strings")]
        return _shared[0]


def _audit_of(heap: GuardedHeap) -> RefAudit:
    """The audit tracking the refcounted and copy-on-write strings of ``heap``."""
    with _audits_lock:
        audit = _audits.get(heap)
        if audit is None:
            audit = _audits[heap] = RefAudit(on_error="report", stack_depth=heap.stack_depth, name=f"{heap.name}-strings")
        return audit


def _let_go(view: memoryview) -> None:
    """Release a view of storage going back to the heap (kept if someone still exports it)."""
    try:
        view.release()
    except BufferError:
        pass


def _heap_arg(heap: object) -> GuardedHeap:
    if heap is None:
        return _shared_heap()
    if not isinstance(heap, GuardedHeap):
        raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
    return heap


# ============================================================================= interning
@dataclass(eq=False)
class _Entry:
    """One interned string: its heap block, its bytes (with the NUL) and its reference."""

    address: int
    data: bytes
    stored: bytes
    view: memoryview
    ref: Ref
    #: The ``str`` it was interned as (a hit by ``str`` then needs no encoding).
    text: str | None = None
    #: Tokens of references released through their handle -> stack id of that release.
    dropped: dict[int, int] = field(default_factory=dict)
    freed: bool = False
    free_sid: int = 0


@dataclass(frozen=True)
class InternedString:
    """An interned string (what :meth:`StringTable.intern` returns).

    :ivar address: its NUL-terminated bytes in guarded native memory (the same for equal strings).
    :ivar value: the bytes (a ``str`` was stored as UTF-8).
    :ivar length: ``len(value)`` (the block holds ``length + 1`` bytes).
    :ivar token: the reference this handle took (``None`` for :meth:`StringTable.lookup`,
        which takes none); :meth:`StringTable.release` of the handle drops exactly that one.
    """

    address: int
    value: bytes
    length: int
    token: int | None = field(default=None, repr=False, compare=False)
    _entry: _Entry | None = field(default=None, repr=False, compare=False)
    _table: Any = field(default=None, repr=False, compare=False)

    @property
    def refcount(self) -> int:
        """The entry's current count (0 once it was removed)."""
        entry = self._entry
        return 0 if entry is None or entry.freed else entry.ref.count

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class StringTableStats:
    """Counters of a :class:`StringTable`.

    :ivar entries: distinct strings interned now.
    :ivar bytes: heap bytes they hold (``length + 1`` each).
    :ivar references: references held on them (the sum of their counts).
    :ivar interns: ``intern()`` calls (``hits + misses``).
    :ivar hits: interns of a string already in the table.
    :ivar misses: interns that created an entry.
    :ivar releases: accepted ``release()`` calls.
    :ivar removals: entries removed (their count reached zero).
    """

    entries: int
    bytes: int
    references: int
    interns: int
    hits: int
    misses: int
    releases: int
    removals: int


class StringTable(Checker):
    """An interning table (Movian's ``strtab``) whose strings live in guarded native memory.

    A :class:`~memguard.checker.Checker` over its heap: its findings, ``on_error`` and
    plugins are the heap's, and ``heap.check()`` verifies it.  Thread-safe (one lock).

    :param heap: the :class:`~memguard.GuardedHeap` the strings are stored in; ``None``
        makes a private heap that :meth:`close` closes.
    :param name: the table's name in reports.
    """

    def __init__(self, heap: GuardedHeap | None = None, name: str = "strtab") -> None:
        if heap is not None and not isinstance(heap, GuardedHeap):
            raise TypeError(f"heap must be a GuardedHeap or None, got {type(heap).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._own_heap = heap is None
        self.heap = heap if heap is not None else GuardedHeap(name=f"{name}-heap")
        super().__init__(name=name, heap=self.heap, on_error=None)
        self._lock = threading.RLock()
        self._stacks = StackTable(self.heap.stack_depth)
        #: The references: one per entry, counting its holders.
        self.audit = RefAudit(on_error="report", stack_depth=self.heap.stack_depth, name=name)
        #: The entries' storage as regions (each its own heap block), for the pool hooks.
        self.pool = MemPool(self.heap, name=name, quarantine_bytes=0, owner=self)
        self._entries: dict[bytes, _Entry] = {}
        self._texts: dict[str, _Entry] = {}
        self._by_address: dict[int, _Entry] = {}
        self._gone: dict[int, _Entry] = {}
        self._gone_values: dict[bytes, _Entry] = {}
        self._bytes = 0
        self._references = 0
        self._hits = 0
        self._misses = 0
        self._releases = 0
        self._removals = 0
        self._closed = False

    # ------------------------------------------------------------------ interning
    def intern(self, value: StrLike) -> InternedString:
        """One reference to the shared copy of ``value`` (``strtab_get``), created on first use.

        ``"x"`` and ``b"x"`` are one entry.  On a hit the entry's bytes are verified
        (``strtab-mutation``).
        """
        text = value if type(value) is str else None
        entry = self._texts.get(text) if text is not None else None
        data = entry.data if entry is not None else value if type(value) is bytes else _encode(value)
        frame = _getframe(1)
        reports: list[Report] = []
        with self._lock:
            if self._closed:
                raise HeapClosedError(f"the string table {self.name!r} is closed")
            entry = self._entries.get(data)
            if entry is not None:
                if text is not None and entry.text is None:
                    entry.text = text
                    self._texts[text] = entry
                if entry.view != entry.stored:
                    reports.append(self._mutation(entry, self._stacks.capture(frame)))
                token = entry.ref.inc(frame=frame)
                self._hits += 1
                op = "inc"
            else:
                if b"\0" in data:
                    _encode(data)
                entry = self._create(data)
                if text is not None:
                    entry.text = text
                    self._texts[text] = entry
                token = 0
                self._misses += 1
                op = "track"
            self._references += 1
            handle = InternedString(entry.address, data, len(data), token, entry, self)
        if reports:
            self.emit(reports)
        if self.observes("memguard_refcount"):
            self.notify("memguard_refcount", audit=self.audit, ref=entry.ref, op=op)
        return handle

    def _create(self, data: bytes) -> _Entry:
        """A new entry for ``data`` (called with the lock held)."""
        n = len(data) + 1
        heap = self.heap
        address = heap.malloc(n)
        try:
            self.pool.add_chunk(address)
            self.pool.alloc(address, n, fill=None)
            view = heap.view(address)
            stored = data + b"\0"
            view[:] = stored
            ref = self.audit.track(address, name=f"{self.name}[{_label(data)}]")
        except BaseException:
            heap.free(address)
            raise
        entry = _Entry(address, data, stored, view, ref)
        self._entries[data] = entry
        self._by_address[address] = entry
        self._bytes += n
        return entry

    def lookup(self, value: StrLike) -> InternedString | None:
        """The interned copy of ``value``, or ``None``; takes no reference."""
        data = value if type(value) is bytes else _encode(value)
        with self._lock:
            entry = self._entries.get(data)
            if entry is None:
                return None
            return InternedString(entry.address, data, len(data), None, entry, self)

    def release(self, string: InternedString | int | StrLike) -> None:
        """Drop one reference (``strtab_release``); at zero the storage goes back to the heap.

        :param string: the handle :meth:`intern` returned (drops exactly its reference), the
            address, or the value (both drop the most recent reference).

        Releasing what is not interned (any more), or the same handle twice, is a
        ``strtab-over-release`` and changes nothing.
        """
        frame = _getframe(1)
        sid = self._stacks.capture(frame)
        if isinstance(string, InternedString) and string._table is not self:
            raise ValueError(f"{string!r} was not interned by the table {self.name!r}")
        key: Any = string
        if not isinstance(string, (InternedString, int)) or isinstance(string, bool):
            key = self._texts.get(string) if type(string) is str else None  # type: ignore[call-overload]
            key = key.data if key is not None else _encode(string, "string")
        elif not isinstance(string, InternedString):
            key = int_arg(string, "address")
        reports: list[Report] = []
        removed = False
        with self._lock:
            if self._closed:
                raise HeapClosedError(f"the string table {self.name!r} is closed")
            entry, report = self._holder(key, sid)
            if entry is not None:
                if entry.view != entry.stored:
                    reports.append(self._mutation(entry, sid))
                ref = entry.ref
                token = key.token if type(key) is InternedString else None
                if token is not None:
                    entry.dropped[token] = sid
                    if len(entry.dropped) > _MAX_GONE:
                        del entry.dropped[next(iter(entry.dropped))]
                    if not ref.holds(token):
                        token = None
                ref.dec(token, frame=frame)
                self._releases += 1
                self._references -= 1
                removed = ref.released
                if removed:
                    self._remove(entry, sid)
            else:
                reports.append(report)  # type: ignore[arg-type]
        if reports:
            self.emit(reports)
        if entry is not None and self.observes("memguard_refcount"):
            self.notify("memguard_refcount", audit=self.audit, ref=ref, op="release" if removed else "dec")

    def _holder(self, key: InternedString | int | bytes, sid: int) -> tuple[_Entry | None, Report | None]:
        """The live entry a release is for, or the ``strtab-over-release`` it is (lock held)."""
        if type(key) is InternedString:
            entry = key._entry
            assert entry is not None
            if entry.freed:
                return None, self._over_release(entry, f"{_label(key.value)} at 0x{key.address:x}", sid,
                                                "was removed from the table")
            if key.token is not None and key.token in entry.dropped:
                return None, self._over_release(entry, f"{_label(key.value)} at 0x{key.address:x}", sid,
                                                "was already released through this handle", entry.dropped[key.token])
            return entry, None
        if type(key) is int:
            found = self._by_address.get(key)
            if found is None:
                return None, self._unknown(self._gone.get(key), f"0x{key:x}", key, sid)
            return found, None
        assert isinstance(key, bytes)
        found = self._entries.get(key)
        if found is None:
            gone = self._gone_values.get(key)
            return None, self._unknown(gone, _label(key), gone.address if gone else 0, sid)
        return found, None
    def _remove(self, entry: _Entry, sid: int) -> None:
        """Take an entry whose count reached zero out of the table and free its storage."""
        data = entry.data
        del self._entries[data]
        if entry.text is not None:
            del self._texts[entry.text]
        del self._by_address[entry.address]
        entry.freed = True
        entry.free_sid = sid
        self._gone[entry.address] = entry
        self._gone_values[data] = entry
        for gone in (self._gone, self._gone_values):
            if len(gone) > _MAX_GONE:
                del gone[next(iter(gone))]  # type: ignore[arg-type]
        self._bytes -= len(entry.stored)
        self._removals += 1
        _let_go(entry.view)
        self.pool.free(entry.address)
        self.pool.remove_chunk(entry.address)
        self.heap.free(entry.address)

    # ------------------------------------------------------------------ findings
    def _mutation(self, entry: _Entry, sid: int) -> Report:
        """``strtab-mutation`` for an entry whose bytes changed (restored afterwards)."""
        found = bytes(entry.view)
        report = _changed(
            "strtab-mutation", entry.address, entry.stored, found, entry.view,
            f"interned string {_label(entry.stored[:-1])} at 0x{entry.address:x} in table {self.name!r} was changed",
            entry.ref.track_stack, self._stacks.get(sid), {"table": self.name, "refcount": entry.ref.count},
        )
        entry.view[:] = entry.stored
        return report

    def _over_release(self, entry: _Entry, what: str, sid: int, why: str, before: int = 0) -> Report:
        freed = self._stacks.get(before) if before else (entry.ref.release_stack if entry.freed else ())
        return Report(
            kind="strtab-over-release", address=entry.address, size=len(entry.stored),
            stack=self._stacks.get(sid), alloc_stack=entry.ref.track_stack, free_stack=freed,
            thread=thread_label(), count=0 if entry.freed else entry.ref.count,
            message=f"release of interned string {what} in table {self.name!r}, which {why}",
            extra={"table": self.name},
        )

    def _unknown(self, gone: _Entry | None, what: str, address: int, sid: int) -> Report:
        if gone is not None:
            return self._over_release(gone, what, sid, "was removed from the table")
        return Report(
            kind="strtab-over-release", address=address, stack=self._stacks.get(sid), thread=thread_label(),
            message=f"release of {what}, which is not interned in table {self.name!r}", extra={"table": self.name},
        )

    # ------------------------------------------------------------------ inspection
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, value: object) -> bool:
        try:
            data = value if type(value) is bytes else _encode(value)
        except (TypeError, ValueError):
            return False
        return data in self._entries

    def __iter__(self) -> Iterator[InternedString]:
        return iter(self.entries())

    def entries(self) -> list[InternedString]:
        """Every entry now (handles that take no reference), oldest first."""
        with self._lock:
            return [InternedString(e.address, d, len(d), None, e, self) for d, e in self._entries.items()]

    #: Characters of an entry's string shown in its heap-map tooltip.
    MAP_TEXT = 200

    def layout_map(self, leaked: Container[int] = (), width: int | None = None) -> HeapMap:
        """The table as a :class:`~memguard.heapmaps.HeapMap`: its entries as one row, by address.

        Each entry (its own heap block of ``length + 1`` bytes) is drawn end to end in
        address order, ``"live"`` (``"leaked"`` when its address is in ``leaked``,
        ``"corrupt"`` when its bytes changed since it was interned); its tooltip gives its
        address, size, serial, reference count, where it was interned and the string itself
        (its first :attr:`MAP_TEXT` characters, as a Python literal; escaped in the SVG).
        Entries are separate heap blocks, so fragmentation is 0 (the heap's map shows
        theirs).  ``width`` merges sub-pixel entries as :meth:`HeapMap.aggregated` does.
        A closed table's map has no row.
        """
        title = f"string table {self.name!r}"
        with self._lock:
            if self._closed:
                return HeapMap(title, (), 0.0, ("closed",))
            readable = not self.heap.closed
            entries = sorted(((e.address, e.data, e.ref.count, readable and e.view != e.stored)
                              for e in self._entries.values()), key=lambda t: t[0])
            regions: dict[int, Any] = {}
            if readable:
                for address, *_ in entries:
                    try:
                        regions[address] = self.pool.region(address)
                    except ValueError:
                        continue
        blocks = []
        off = 0
        for address, data, count, changed in entries:
            region = regions.get(address)
            text = data[: self.MAP_TEXT * 4].decode("utf-8", "backslashreplace")
            shown = repr(text[: self.MAP_TEXT]) + ("…" if len(text) > self.MAP_TEXT or len(data) > self.MAP_TEXT * 4 else "")
            state = "corrupt" if changed else "leaked" if address in leaked else "live"
            blocks.append(MapBlock(off, len(data) + 1, state, region.serial if region else 0,
                                   site_text(region.alloc_stack) if region else "", address=address,
                                   what=f"string {shown}, {count} reference(s)"))
            off += len(data) + 1
        row = MapRow(f"entries by address ({len(entries)})", entries[0][0] if len(entries) == 1 else 0, off,
                     tuple(blocks))
        m = HeapMap(title, (row,) if entries else (), 0.0)
        return m if width is None else m.aggregated(width)

    def stats(self) -> StringTableStats:
        """The table's counters."""
        with self._lock:
            return StringTableStats(
                entries=len(self._entries), bytes=self._bytes, references=self._references,
                interns=self._hits + self._misses, hits=self._hits, misses=self._misses,
                releases=self._releases, removals=self._removals,
            )

    def leaks(self) -> list[Report]:
        """``strtab-leak`` reports for the references held now, one per entry and acquiring stack."""
        reports = []
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            ref = entry.ref
            total = ref.count
            for stack, n in ref.users():
                reports.append(Report(
                    kind="strtab-leak", address=entry.address, alloc_stack=stack, count=n,
                    message=f"{_label(entry.stored[:-1])}@0x{entry.address:x} has {n}/{total} users at:",
                    extra={"table": self.name, "users": n, "count": total},
                ))
        return reports

    # ------------------------------------------------------------------ the checker contract
    def verify(self) -> list[Report]:
        """Every entry's bytes (``strtab-mutation``); the heap verifies the blocks themselves."""
        if self._closed:
            return []
        sid = self._stacks.here(2)
        with self._lock:
            return [self._mutation(e, sid) for e in self._entries.values() if e.view != e.stored]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> list[Report]:
        """Verify, report the references still held (``strtab-leak``), free every entry.

        Findings follow the heap's ``on_error`` (with ``"raise"``, the first is raised once
        the storage is back on the heap).  A private heap is closed too.  Closing twice is
        a no-op.
        """
        with self._lock:
            if self._closed:
                return []
            with self.heap.reporting() as saved:
                reports = self.verify() + self.leaks()
                self._closed = True
                sid = self._stacks.here(2)
                for entry in list(self._entries.values()):
                    self._references -= entry.ref.count
                    self.audit.untrack(entry.ref)
                    if not self.heap.closed:
                        self._remove(entry, sid)
                self._entries.clear()
                self._texts.clear()
                self._by_address.clear()
                if not self.heap.closed:
                    self.emit(reports)
                    self.pool.destroy()
                else:
                    self.reports.extend(reports)
                if self._own_heap:
                    reports = reports + self.heap.close()
        if reports and saved == "raise":
            raise error_for(reports[0])
        return reports

    def __repr__(self) -> str:
        return f"<StringTable {self.name!r}: {len(self._entries)} entries, {self._references} references>"


# ============================================================================= refcounted strings
class _Stored(Checker):
    """What :class:`RString` and :class:`CowString` share: a string in one heap block, refcounted."""

    heap: GuardedHeap
    audit: RefAudit
    _stacks: StackTable

    def _store(self, data: bytes) -> tuple[int, memoryview]:
        address = self.heap.malloc(len(data) + 1)
        view = self.heap.view(address)
        view[:] = data + b"\0"
        return address, view

    def _refcount(self, ref: Ref, op: str) -> None:
        if self.observes("memguard_refcount"):
            self.notify("memguard_refcount", audit=self.audit, ref=ref, op=op)

    def _finding(self, kind: str, ref: Ref, address: int, what: str, sid: int, freed: Stack = ()) -> Report:
        return Report(
            kind=kind, address=address, stack=self._stacks.get(sid), alloc_stack=ref.track_stack,
            free_stack=freed or ref.release_stack, thread=thread_label(), count=0,
            message=f"refcount_t: {what}: {self.name} at 0x{address:x}", extra={"name": self.name},
        )


class RString(_Stored):
    """A refcounted string (Movian's ``rstr``) in guarded native memory.

    Created with one reference; :meth:`dup` takes another (and returns the same string),
    :meth:`release` drops one, and the last release frees the storage.  A release at zero
    is ``rstr-underflow`` (the count saturates), a ``dup`` at zero
    ``rstr-use-after-release``; a write into the freed storage is the heap's
    ``heap-use-after-free``.

    :param value: ``str`` (stored as UTF-8) or bytes, without NUL.
    :param heap: the heap (``None``: one shared heap for the strings created without one).
    :param name: the label in reports.
    """

    def __init__(self, value: StrLike, heap: GuardedHeap | None = None, name: str = "rstr") -> None:
        data = _encode(value)
        self.heap = _heap_arg(heap)
        super().__init__(name=name, heap=self.heap, on_error=None)
        self.audit = _audit_of(self.heap)
        self._stacks = self.audit._stacks
        self._lock = threading.Lock()
        self.length = len(data)
        self.address, self._view = self._store(data)
        self.ref = self.audit.track(self.address, name=f"{name}[{_label(data)}]")
        self._saturated = False
        self._refcount(self.ref, "track")

    @property
    def refcount(self) -> int:
        """The current count (0 after the final release)."""
        return self.ref.count

    @property
    def value(self) -> bytes:
        """The bytes (``ValueError`` after the final release: the storage is gone)."""
        with self._lock:
            if self.ref.released:
                raise ValueError(f"{self.name} at 0x{self.address:x} was released")
            return bytes(self._view[: self.length])

    def dup(self) -> RString:
        """Take a reference (``rstr_dup``); return this string."""
        frame = _getframe(1)
        sid = self._stacks.capture(frame)
        with self.hold_errors(), self._lock:
            if self._saturated:
                return self
            if self.ref.released:
                self._saturated = True
                self.emit([self._finding("rstr-use-after-release", self.ref, self.address,
                                         "addition on 0; use-after-free", sid)])
                return self
            self.ref.inc(frame=frame)
        self._refcount(self.ref, "inc")
        return self

    def release(self) -> None:
        """Drop a reference (``rstr_release``); the last one frees the storage."""
        frame = _getframe(1)
        sid = self._stacks.capture(frame)
        with self.hold_errors(), self._lock:
            if self._saturated:
                return
            if self.ref.released:
                self._saturated = True
                self.emit([self._finding("rstr-underflow", self.ref, self.address, "underflow; use-after-free", sid)])
                return
            self.ref.dec(frame=frame)
            released = self.ref.released
            if released:
                _let_go(self._view)
                self.heap.free(self.address)
        self._refcount(self.ref, "release" if released else "dec")

    def verify(self) -> list[Report]:
        """Nothing of its own: its storage is a heap block, which the heap verifies."""
        return []

    @property
    def closed(self) -> bool:
        """Whether the final release happened."""
        return self.ref.released

    def close(self) -> list[Report]:
        """Nothing to release: a refcounted string ends with its final :meth:`release`."""
        return []

    def __repr__(self) -> str:
        return f"<RString {self.name} at 0x{self.address:x} refcount={self.ref.count}>"


class _CowBuffer:
    """A copy-on-write buffer: its block, its reference, and while shared, the bytes it must keep."""

    __slots__ = ("address", "length", "view", "ref", "snapshot", "lock")

    def __init__(self, address: int, length: int, view: memoryview, ref: Ref) -> None:
        self.address = address
        self.length = length
        self.view = view
        self.ref = ref
        self.snapshot: bytes | None = None
        self.lock = threading.Lock()


class CowString(_Stored):
    """A copy-on-write string (Movian's ``cow_string_t``) in guarded native memory.

    :meth:`copy` shares the buffer (one more reference); :meth:`modify` returns a string
    that may be written: this one when it is the sole owner, else a private copy (and this
    handle gives up its share, as Movian's does).  Each handle holds one reference, which
    :meth:`release` drops.  Bytes that change while the buffer is shared are a
    ``cow-shared-write`` (found at :meth:`check`, :meth:`copy`, :meth:`modify` and
    :meth:`release`); a handle released twice is ``rstr-underflow``.

    :param value: ``str`` (stored as UTF-8) or bytes, without NUL.
    :param heap: the heap (``None``: one shared heap for the strings created without one).
    :param name: the label in reports.
    """

    def __init__(self, value: StrLike, heap: GuardedHeap | None = None, name: str = "cow",
                 *, _share: tuple[_CowBuffer, int] | None = None) -> None:
        data = _encode(value) if _share is None else b""
        self.heap = _heap_arg(heap)
        super().__init__(name=name, heap=self.heap, on_error=None)
        self.audit = _audit_of(self.heap)
        self._stacks = self.audit._stacks
        self._released_sid = 0
        if _share is not None:
            self._buffer, self._token = _share
            return
        address, view = self._store(data)
        ref = self.audit.track(address, name=f"{name}[{_label(data)}]")
        self._buffer = _CowBuffer(address, len(data), view, ref)
        self._token = 0
        self._refcount(ref, "track")

    @property
    def address(self) -> int:
        """The buffer's NUL-terminated bytes (shared by the copies)."""
        return self._buffer.address

    @property
    def refcount(self) -> int:
        """The buffer's count (the handles sharing it)."""
        return self._buffer.ref.count

    @property
    def value(self) -> bytes:
        """The bytes (``ValueError`` once this handle was released)."""
        buf = self._buffer
        with buf.lock:
            self._live()
            return bytes(buf.view[: buf.length])

    def _live(self) -> None:
        if self._released_sid:
            raise ValueError(f"this {self.name} handle of 0x{self._buffer.address:x} was released")

    def _shared_write(self, sid: int) -> list[Report]:
        """``cow-shared-write`` when the shared buffer changed (restored afterwards); lock held."""
        buf = self._buffer
        if buf.snapshot is None or buf.view == buf.snapshot:
            return []
        report = _changed(
            "cow-shared-write", buf.address, buf.snapshot, bytes(buf.view), buf.view,
            f"copy-on-write string {self.name} at 0x{buf.address:x} shared by {buf.ref.count} holders "
            "was written without modify()",
            buf.ref.track_stack, self._stacks.get(sid), {"name": self.name, "refcount": buf.ref.count},
        )
        buf.view[:] = buf.snapshot
        return [report]

    def copy(self) -> CowString:
        """Share the buffer (``cow_string_copy``): a new handle, one more reference."""
        frame = _getframe(1)
        sid = self._stacks.capture(frame)
        buf = self._buffer
        with self.hold_errors(), buf.lock:
            self._live()
            self.emit(self._shared_write(sid))
            token = buf.ref.inc(frame=frame)
            if buf.snapshot is None:
                buf.snapshot = bytes(buf.view)
            other = CowString(b"", self.heap, self.name, _share=(buf, token))
        self._refcount(buf.ref, "inc")
        return other

    def modify(self) -> CowString:
        """A string that may be written (``cow_string_modify``).

        The sole owner returns itself; a shared one returns a private copy of the bytes and
        this handle gives up its share (it is released).
        """
        frame = _getframe(1)
        sid = self._stacks.capture(frame)
        buf = self._buffer
        with self.hold_errors(), buf.lock:
            self._live()
            self.emit(self._shared_write(sid))
            if buf.ref.count == 1:
                return self
            data = bytes(buf.view[: buf.length])
        private = CowString(data, self.heap, self.name)
        self._drop(sid, frame)
        return private

    def view(self) -> memoryview:
        """The string's ``length`` bytes: writable for the sole owner, read-only while shared."""
        buf = self._buffer
        with buf.lock:
            self._live()
            view = buf.view[: buf.length]
            return view if buf.ref.count == 1 else view.toreadonly()

    def release(self) -> None:
        """Drop this handle's reference (``cow_string_release``); the last one frees the buffer."""
        frame = _getframe(1)
        self._drop(self._stacks.capture(frame), frame)

    def _drop(self, sid: int, frame: FrameType) -> None:
        buf = self._buffer
        with self.hold_errors(), buf.lock:
            if self._released_sid:
                self.emit([self._finding("rstr-underflow", buf.ref, buf.address,
                                         "underflow; use-after-free (this handle was already released)", sid,
                                         self._stacks.get(self._released_sid))])
                return
            self.emit(self._shared_write(sid))
            self._released_sid = sid
            token = self._token if buf.ref.holds(self._token) else None
            buf.ref.dec(token, frame=frame)
            released = buf.ref.released
            if buf.ref.count <= 1:
                buf.snapshot = None
            if released:
                _let_go(buf.view)
                self.heap.free(buf.address)
        self._refcount(buf.ref, "release" if released else "dec")

    def verify(self) -> list[Report]:
        """``cow-shared-write`` if the buffer changed while shared."""
        buf = self._buffer
        with buf.lock:
            if self._released_sid:
                return []
            return self._shared_write(self._stacks.here(2))

    @property
    def closed(self) -> bool:
        """Whether this handle was released."""
        return bool(self._released_sid)

    def close(self) -> list[Report]:
        """Nothing to release: a handle ends with :meth:`release`."""
        return []

    def __repr__(self) -> str:
        state = "released" if self._released_sid else f"refcount={self._buffer.ref.count}"
        return f"<CowString {self.name} at 0x{self._buffer.address:x} {state}>"
