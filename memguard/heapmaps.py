"""Heap maps: memory drawn as rows of blocks, and their SVG text.

A :class:`HeapMap` is a value: rows (:class:`MapRow`, one per region of memory: an arena
size class of the guarded heap, a page of a block allocator, a chunk of a pool), each
with its blocks (:class:`MapBlock`: offset in the row, size, state, serial, allocation
site).  The heap and every sub-allocator build one from their own records
(``heap.layout_map()``, ``allocator.layout_map()``); :func:`render_svg` draws it, each row a
bar, each block a rectangle scaled to its size and coloured by its state, with a legend,
the totals and the fragmentation figure; each rectangle's ``<title>`` (the tooltip) gives
its address, size, serial and allocation site.

Big maps stay small: :meth:`HeapMap.aggregated` merges blocks narrower than a pixel into
runs (one rectangle whose tooltip counts the blocks of each state), so a row never has
more rectangles than pixels, and neighbouring runs of one state merge into one.

Every string that came from a program (function and file names, labels) is escaped, and
characters XML forbids are replaced, so a map is well-formed whatever it shows.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

__all__ = [
    "STATES",
    "STATE_COLOURS",
    "MapBlock",
    "MapRow",
    "HeapMap",
    "DEFAULT_WIDTH",
    "MAX_RECTS",
    "render_svg",
    "escape",
    "fragmentation_of",
    "site_text",
    "SVG_STYLE",
]

#: The states a block may be drawn in, in legend order.
STATES = ("live", "leaked", "quarantined", "free", "corrupt")
#: Fill of each state (and of space no block covers, ``"unused"``).
STATE_COLOURS: Mapping[str, str] = {
    "live": "#3b7dd8",
    "leaked": "#e0782f",
    "quarantined": "#9b59b6",
    "free": "#8fd18f",
    "corrupt": "#d62728",
    "unused": "#e8e8e8",
}
#: Pixels across a row of a map.
DEFAULT_WIDTH = 1000
#: About the most rectangles a map draws: with many rows, runs are made wider than a pixel.
MAX_RECTS = 20_000
_BAR = 18
_ROW = 40
_TOP = 64

#: The CSS of a map's classes (also used by the HTML report, which inlines maps).
SVG_STYLE = "".join(f".s-{s}{{fill:{c}}}" for s, c in STATE_COLOURS.items()) + (
    ".mg-label{font:12px sans-serif;fill:#222}.mg-head{font:bold 14px sans-serif;fill:#111}"
    ".mg-row rect{stroke:none}"
)

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def escape(text: object) -> str:
    """``text`` made safe inside HTML/SVG text and attribute values (quotes escaped too)."""
    return html.escape(_BAD_XML.sub("\ufffd", str(text)), quote=True)


class MapBlock(NamedTuple):
    """One block of a :class:`MapRow` (or, with ``count > 1``, a run of blocks merged for drawing).

    :ivar offset: its first byte, from the row's start.
    :ivar size: its bytes (a run: from its first block's start to its last block's end).
    :ivar state: one of :data:`STATES` (a run: the state with the most bytes).
    :ivar serial: its allocation number (0 when unknown, and for runs).
    :ivar site: where it was allocated (``function file:line``), when known.
    :ivar count: blocks it stands for (1 for a block).
    :ivar mix: a run's blocks by state (``"live 30/960, free 2/64"``: blocks/bytes); empty for a block.
    :ivar address: its address, when it is not the row's address plus ``offset`` (rows
        that lay several regions end to end); 0 otherwise.
    :ivar what: what it holds, for its tooltip (a string table's entry: the string); empty
        when nothing is to say.
    """

    offset: int
    size: int
    state: str
    serial: int = 0
    site: str = ""
    count: int = 1
    mix: str = ""
    address: int = 0
    what: str = ""


@dataclass(frozen=True)
class MapRow:
    """A region of memory drawn as one bar.

    :ivar label: what it is (``"page 3"``, ``"arenas of 64-byte slots"``).
    :ivar address: the address of its first byte (0 when it spans several regions).
    :ivar size: bytes it spans.
    :ivar blocks: its blocks, by offset; space none covers is drawn as unused.
    """

    label: str
    address: int
    size: int
    blocks: tuple[MapBlock, ...] = ()


@dataclass(frozen=True)
class HeapMap:
    """A map of some memory: its rows, and the figures its legend shows.

    :ivar title: what is mapped (``"guarded heap 'main'"``).
    :ivar rows: its rows.
    :ivar fragmentation: ``1 - largest free range / free bytes`` (0.0 when nothing is free),
        as the mapped allocator measures it.
    :ivar notes: extra lines for the legend (``"bytes moved 4096"``).
    """

    title: str
    rows: tuple[MapRow, ...]
    fragmentation: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def totals(self) -> dict[str, tuple[int, int]]:
        """``state -> (blocks, bytes)`` over every row (runs count each of their blocks once)."""
        out = {s: [0, 0] for s in STATES}
        for row in self.rows:
            for b in row.blocks:
                t = out.setdefault(b.state, [0, 0])
                if b.count == 1:
                    t[0] += 1
                    t[1] += b.size
                else:
                    for state, n, nbytes in _parse_mix(b.mix):
                        t2 = out.setdefault(state, [0, 0])
                        t2[0] += n
                        t2[1] += nbytes
        return {s: (v[0], v[1]) for s, v in out.items()}

    @property
    def total_bytes(self) -> int:
        """Bytes of every row."""
        return sum(r.size for r in self.rows)

    @property
    def block_count(self) -> int:
        """Blocks drawn or counted in runs."""
        return sum(b.count for r in self.rows for b in r.blocks)

    def aggregated(self, width: int = DEFAULT_WIDTH, site: Callable[[MapBlock], str] | None = None) -> HeapMap:
        """This map with blocks narrower than a pixel (at ``width`` pixels a row) merged into runs.

        A map of many rows merges blocks narrower than ``rows * width /`` :data:`MAX_RECTS`
        pixels instead, so that it draws about :data:`MAX_RECTS` rectangles at most.

        ``site(block)`` is asked for the allocation site of each block that stays a
        rectangle of its own and has none (so a million-block map asks at most once a pixel).
        """
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        min_px = max(1.0, len(self.rows) * width / MAX_RECTS)
        rows = tuple(
            MapRow(r.label, r.address, r.size, tuple(_aggregate(r, width / r.size if r.size else 0.0, site, min_px)))
            for r in self.rows
        )
        return HeapMap(self.title, rows, self.fragmentation, self.notes)

    def svg(self, width: int = DEFAULT_WIDTH) -> str:
        """The map as a standalone SVG document (see :func:`render_svg`)."""
        return render_svg(self, width)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A compact JSON document: each block as ``[offset, size, state, serial, site, count, mix, address]``.

        A block that says what it holds (:attr:`MapBlock.what`) has a ninth field, that text.
        """
        return {
            "title": self.title,
            "fragmentation": round(self.fragmentation, 6),
            "notes": list(self.notes),
            "rows": [
                {"label": r.label, "address": r.address, "size": r.size,
                 "blocks": [list(b) if b.what else list(b)[:8] for b in r.blocks]}
                for r in self.rows
            ],
        }

    @classmethod
    def from_dump(cls, dump: Mapping[str, Any]) -> HeapMap:
        """A map of a block allocator's VMA-shaped dump (``BlockAllocator.dump_stats()``), a row per page.

        :raises ValueError: not such a dump.
        """
        try:
            rows = []
            for page in dump["Pages"]:
                blocks = [MapBlock(int(r["Offset"]), int(r["Size"]), "free") for r in page["FreeRanges"]]
                blocks += [MapBlock(int(a["Offset"]), int(a["Size"]), "live", int(a.get("Serial", 0)), str(a.get("Site", "")))
                           for a in page["Suballocations"]]
                blocks.sort()
                rows.append(MapRow(f"page {int(page['Index'])}", int(page["Address"]), int(page["Size"]), tuple(blocks)))
            return cls(f"block allocator {str(dump.get('Name', ''))!r}", tuple(rows),
                       float(dump["Total"]["Fragmentation"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a block allocator dump: {type(exc).__name__}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "heap_map") -> HeapMap:
        """Rebuild a map from :meth:`to_dict` output, treating it as untrusted.

        :raises ValueError: a field of the wrong type or out of range (the message names it).
        """
        def need(value: Any, ok: bool, at: str, what: str) -> Any:
            if not ok:
                raise ValueError(f"{at}: expected {what}")
            return value

        def nat(value: Any, at: str) -> int:
            return need(value, type(value) is int and 0 <= value < 1 << 64, at, "an integer >= 0")  # type: ignore[no-any-return]

        def text(value: Any, at: str) -> str:
            return need(value, isinstance(value, str), at, "a string")  # type: ignore[no-any-return]

        need(data, isinstance(data, Mapping), where, "an object")
        frag = data.get("fragmentation", 0.0)
        need(frag, type(frag) in (int, float) and 0 <= frag <= 1, f"{where}.fragmentation", "a number from 0 to 1")
        notes = need(data.get("notes", []), isinstance(data.get("notes", []), list), f"{where}.notes", "an array")
        rows_doc = need(data.get("rows", []), isinstance(data.get("rows", []), list), f"{where}.rows", "an array")
        rows = []
        for i, r in enumerate(rows_doc):
            at = f"{where}.rows[{i}]"
            need(r, isinstance(r, Mapping), at, "an object")
            blocks_doc = need(r.get("blocks", []), isinstance(r.get("blocks", []), list), f"{at}.blocks", "an array")
            blocks = []
            for j, b in enumerate(blocks_doc):
                bt = f"{at}.blocks[{j}]"
                need(b, isinstance(b, list) and len(b) in (8, 9), bt, "an array of 8 fields (9 with what it holds)")
                state = text(b[2], f"{bt}[2]")
                need(state, state in STATES, f"{bt}[2]", f"one of {', '.join(STATES)}")
                blocks.append(MapBlock(nat(b[0], f"{bt}[0]"), nat(b[1], f"{bt}[1]"), state, nat(b[3], f"{bt}[3]"),
                                       text(b[4], f"{bt}[4]"), nat(b[5], f"{bt}[5]"), text(b[6], f"{bt}[6]"),
                                       nat(b[7], f"{bt}[7]"), text(b[8], f"{bt}[8]") if len(b) == 9 else ""))
            rows.append(MapRow(text(r.get("label", ""), f"{at}.label"), nat(r.get("address", 0), f"{at}.address"),
                               nat(r.get("size", 0), f"{at}.size"), tuple(blocks)))
        return cls(text(data.get("title", ""), f"{where}.title"), tuple(rows), float(frag),
                   tuple(text(n, f"{where}.notes[{k}]") for k, n in enumerate(notes)))


def site_text(stack: Sequence[Any]) -> str:
    """A stack's first frame as an allocation site: ``function file:line`` (empty for no frame)."""
    if not stack:
        return ""
    f = stack[0]
    return f"{f.name} {f.filename}:{f.lineno}"


def fragmentation_of(free_ranges: Iterable[int]) -> float:
    """``1 - largest / total`` of the sizes of some free ranges (0.0 when there are none)."""
    sizes = [s for s in free_ranges if s > 0]
    total = sum(sizes)
    return 1 - max(sizes) / total if total else 0.0


def _parse_mix(mix: str) -> list[tuple[str, int, int]]:
    out = []
    for part in mix.split(", ") if mix else ():
        state, _, rest = part.partition(" ")
        n, _, nbytes = rest.partition("/")
        if n.isdigit() and nbytes.isdigit():
            out.append((state, int(n), int(nbytes)))
    return out


def _aggregate(row: MapRow, scale: float, site: Callable[[MapBlock], str] | None, min_px: float = 1.0) -> list[MapBlock]:
    """The blocks of ``row`` at ``scale`` pixels a byte: runs of blocks narrower than ``min_px``, merged by state."""
    out: list[MapBlock] = []
    run: list[MapBlock] = []

    def flush() -> None:
        if not run:
            return
        if len(run) == 1:
            emit(run[0])
        else:
            by: dict[str, list[int]] = {}
            for b in run:
                t = by.setdefault(b.state, [0, 0])
                t[0] += b.count
                t[1] += b.size
            start, end = run[0].offset, run[-1].offset + run[-1].size
            state = max(by.items(), key=lambda kv: kv[1][1])[0]
            mix = ", ".join(f"{s} {n}/{nb}" for s, (n, nb) in sorted(by.items(), key=lambda kv: STATES.index(kv[0])))
            emit(MapBlock(start, end - start, state, 0, "", sum(v[0] for v in by.values()), mix, run[0].address))
        run.clear()

    def emit(b: MapBlock) -> None:
        if b.count == 1 and not b.site and site is not None:
            b = b._replace(site=site(b))
        if out:
            prev = out[-1]
            # Neighbouring runs (or a run and a sub-pixel block) of one state: one rectangle.
            if (prev.count > 1 or prev.size * scale < min_px) and (b.count > 1 or b.size * scale < min_px) \
                    and prev.state == b.state and "," not in prev.mix and "," not in b.mix:
                n = prev.count + b.count
                nb = (prev.size if prev.count == 1 else _mix_bytes(prev)) + (b.size if b.count == 1 else _mix_bytes(b))
                out[-1] = MapBlock(prev.offset, b.offset + b.size - prev.offset, b.state, 0, "", n, f"{b.state} {n}/{nb}",
                                   prev.address)
                return
        out.append(b)

    for b in row.blocks:
        if b.size * scale >= min_px:
            flush()
            emit(b)
            continue
        run.append(b)
        if (b.offset + b.size - run[0].offset) * scale >= min_px:
            flush()
    flush()
    return out


def _mix_bytes(b: MapBlock) -> int:
    return sum(nb for _, _, nb in _parse_mix(b.mix)) if b.mix else b.size


def _title(row: MapRow, b: MapBlock) -> str:
    address = b.address or row.address + b.offset
    if b.count > 1:
        parts = [f"{s} {n} block(s), {nb} bytes" for s, n, nb in _parse_mix(b.mix)]
        return f"0x{address:x}..0x{address + b.size:x}: {b.count} blocks; " + "; ".join(parts)
    text = f"0x{address:x}: {b.size} bytes, {b.state}"
    if b.serial:
        text += f", serial {b.serial}"
    if b.what:
        text += f"\n{b.what}"
    if b.site:
        text += f"\nallocated at {b.site}"
    return text


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def render_svg(heap_map: HeapMap, width: int = DEFAULT_WIDTH, standalone: bool = True,
               site: Callable[[MapBlock], str] | None = None) -> str:
    """``heap_map`` as SVG: a legend with totals and fragmentation, then a bar per row.

    Blocks narrower than a pixel are merged first (:meth:`HeapMap.aggregated`).
    ``standalone`` adds the XML namespace declaration a ``.svg`` file needs.
    """
    m = heap_map.aggregated(width, site)
    totals = m.totals()
    left = 8
    height = _TOP + _ROW * len(m.rows) + (14 * len(m.notes)) + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mg-heapmap" width="{width + 2 * left}" height="{height}" '
        f'viewBox="0 0 {width + 2 * left} {height}" role="img" aria-label="{escape(m.title)}">'
        if standalone else
        f'<svg class="mg-heapmap" width="{width + 2 * left}" height="{height}" viewBox="0 0 {width + 2 * left} {height}" '
        f'role="img" aria-label="{escape(m.title)}">',
        f"<style>{SVG_STYLE}</style>",
        f'<text class="mg-head" x="{left}" y="16">{escape(m.title)}</text>',
    ]
    x = left
    for state in STATES + ("unused",):
        blocks, nbytes = totals.get(state, (0, 0))
        label = f"{state} {blocks} / {_fmt_bytes(nbytes)}" if state != "unused" else "unused"
        out.append(f'<rect class="s-{state}" x="{x}" y="24" width="12" height="12"><title>{escape(label)}</title></rect>'
                   f'<text class="mg-label" x="{x + 16}" y="34">{escape(label)}</text>')
        x += 30 + 7 * len(label)
    live_bytes = totals["live"][1] + totals["leaked"][1]
    summary = (f"{len(m.rows)} row(s), {_fmt_bytes(m.total_bytes)}, {m.block_count} block(s), "
               f"in use {_fmt_bytes(live_bytes)}, fragmentation {m.fragmentation:.1%}")
    out.append(f'<text class="mg-label" x="{left}" y="54">{escape(summary)}</text>')
    y = _TOP
    for i, row in enumerate(m.rows):
        scale = width / row.size if row.size else 0.0
        used = sum(b.size for b in row.blocks if b.state != "free")
        head = f"{row.label} at 0x{row.address:x}: {_fmt_bytes(row.size)}, {_fmt_bytes(used)} used" if row.address else \
            f"{row.label}: {_fmt_bytes(row.size)}, {_fmt_bytes(used)} used"
        out.append(f'<g class="mg-row" data-row="{i}"><text class="mg-label" x="{left}" y="{y + 12}">{escape(head)}</text>'
                   f'<rect class="s-unused" x="{left}" y="{y + 16}" width="{width}" height="{_BAR}"/>')
        for b in row.blocks:
            bx = left + b.offset * scale
            bw = max(b.size * scale, 0.5)
            out.append(f'<rect class="s-{b.state}" x="{bx:.2f}" y="{y + 16}" width="{bw:.2f}" height="{_BAR}">'
                       f"<title>{escape(_title(row, b))}</title></rect>")
        out.append("</g>")
        y += _ROW
    for note in m.notes:
        y += 14
        out.append(f'<text class="mg-label" x="{left}" y="{y}">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

