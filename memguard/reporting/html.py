"""The self-contained HTML pages: an exit report, and heap maps on their own.

:func:`render_html` turns an :class:`~memguard.reporting.exitreport.ExitReport` into one
HTML file: the summary, each finding (its ASan text: stacks and hexdump), the leak groups
as a collapsible tree by call site with sizes (``<details>``, from the outermost caller
down to the allocation site, as memray's tree view), and the heap maps (inline SVG).
Everything is inline (CSS, SVG, a few lines of script that add a filter box, sort buttons on
the tables' headers and a "sort leak sites by" bar over each leak tree); nothing is fetched,
and the page reads the same with JavaScript disabled (tables and trees come sorted by size,
largest first, except the tests table, in run order).  A Content-Security-Policy allows
only that script (by its SHA-256, computed from :data:`_SCRIPT` when the page is made) and
inline styles.

Every string that came from the program (file, function and program names, arguments,
messages, labels) is escaped, so a report of a hostile program runs none of its script.

:func:`heapmap` (``memguard.heapmap``) writes the map of a heap or allocator as ``.svg`` or ``.html``
through :mod:`memguard.reporting.files` (a new 0600 file, renamed into place).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from memguard.heapmaps import DEFAULT_WIDTH, SVG_STYLE, HeapMap, escape, render_svg
from memguard.leaks import LeakGroup
from memguard.report import Report
from memguard.reporting.exitreport import ExitReport
from memguard.reporting.files import write_report_file
from memguard.stacks import Frame
from memguard.reporting.suppressions import summarize

if TYPE_CHECKING:
    from memguard.allocators.blocks import BlockAllocator
    from memguard.allocators.defrag import DefragStats

__all__ = ["render_html", "render_pytest_html", "render_maps_page", "defrag_snapshot", "heapmap", "leak_tree", "LeakNode", "MAX_TREE_DEPTH"]

#: Frames of a leak stack the tree descends (deeper frames are folded into the last node).
MAX_TREE_DEPTH = 64

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px 20px;color:#111;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:22px 0 8px;border-bottom:1px solid #ddd}
table.mg-summary td,table.mg-summary th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.mg-ok{color:#1a7f37;font-weight:bold}.mg-bad{color:#b42318;font-weight:bold}
details{margin:2px 0}summary{cursor:pointer}
details.mg-finding{border:1px solid #e5c4c4;border-radius:4px;padding:4px 8px;margin:6px 0;background:#fff8f8}
pre{font:12px/1.35 ui-monospace,monospace;overflow-x:auto;background:#f6f8fa;padding:6px;margin:4px 0}
.mg-tree details{margin-left:18px}.mg-tree>details{margin-left:0}
.mg-size{display:inline-block;min-width:92px;font-variant-numeric:tabular-nums;color:#555}
.mg-bar{display:inline-block;height:9px;background:#e0782f;margin-right:6px;vertical-align:middle}
ol.mg-chain{margin:2px 0 2px 18px;padding-left:18px;color:#444;font:12px ui-monospace,monospace}
code{font:12px ui-monospace,monospace}.mg-maps svg{max-width:100%;height:auto}
.mg-side{display:grid;grid-template-columns:1fr 1fr;gap:12px}body:has(.mg-side){max-width:none}
#mg-filter{margin:6px 0;padding:3px 6px;width:320px}.mg-hidden{display:none}
button.mg-sort{font:inherit;font-weight:bold;border:0;background:none;padding:0;cursor:pointer;color:inherit;
text-decoration:underline dotted}
th[aria-sort=descending] button.mg-sort::after{content:" \\25BC"}th[aria-sort=ascending] button.mg-sort::after{content:" \\25B2"}
.mg-sortbar{margin:4px 0;color:#555}.mg-sortbar button.mg-sort{margin:0 6px;font-weight:normal}
.mg-sortbar button.mg-sort[aria-pressed=true]{font-weight:bold}
"""

_SCRIPT = """
(function(){
  var box=document.createElement('input');box.id='mg-filter';box.type='search';
  box.placeholder='filter findings and leak sites';
  var anchor=document.getElementById('mg-findings-h');
  if(!anchor)return;anchor.parentNode.insertBefore(box,anchor);
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    document.querySelectorAll('.mg-finding,.mg-tree>details').forEach(function(el){
      el.classList.toggle('mg-hidden',q!==''&&el.textContent.toLowerCase().indexOf(q)<0);
    });
  });
})();
(function(){
  var each=Array.prototype.forEach;
  function num(el,name){var v=parseFloat(el.getAttribute(name));return isNaN(v)?0:v;}
  function key(cell){var v=cell.getAttribute('data-sort');return v===null?cell.textContent.toLowerCase():parseFloat(v);}
  function cmp(a,b){return a<b?-1:a>b?1:0;}
  function button(text){var b=document.createElement('button');b.type='button';b.className='mg-sort';b.textContent=text;return b;}
  document.querySelectorAll('table.mg-sortable').forEach(function(table){
    if(!table.tHead||!table.tBodies.length)return;
    var heads=table.tHead.rows[0].cells;
    each.call(heads,function(th,col){
      var b=button(th.textContent);th.textContent='';th.appendChild(b);
      b.addEventListener('click',function(){
        var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),was=th.getAttribute('aria-sort');
        var desc=was?was==='ascending':rows.length>0&&rows[0].cells[col].hasAttribute('data-sort');
        each.call(heads,function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',desc?'descending':'ascending');
        rows.sort(function(x,y){var r=cmp(key(x.cells[col]),key(y.cells[col]));return desc?-r:r;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  function sortTree(node,by){
    var kids=Array.prototype.filter.call(node.children,function(c){return c.tagName==='DETAILS';});
    kids.sort(function(x,y){
      if(by==='site')return cmp(x.getAttribute('data-site'),y.getAttribute('data-site'));
      return num(y,'data-'+by)-num(x,'data-'+by)||num(y,'data-size')-num(x,'data-size');
    });
    kids.forEach(function(c){node.appendChild(c);sortTree(c,by);});
  }
  document.querySelectorAll('.mg-tree').forEach(function(tree){
    var bar=document.createElement('div');bar.className='mg-sortbar';
    bar.appendChild(document.createTextNode('sort leak sites by'));
    [['size','bytes'],['count','blocks'],['site','site']].forEach(function(k){
      var b=button(k[1]);b.setAttribute('data-by',k[0]);b.setAttribute('aria-pressed',k[0]==='size'?'true':'false');
      b.addEventListener('click',function(){
        each.call(bar.querySelectorAll('button'),function(o){o.setAttribute('aria-pressed',o===b?'true':'false');});
        sortTree(tree,k[0]);
      });
      bar.appendChild(b);
    });
    tree.parentNode.insertBefore(bar,tree);
  });
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}{SVG_STYLE}</style>\n</head>\n<body>\n"
        f"{body}\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} TiB"


# ---------------------------------------------------------------------------- leak tree
class LeakNode:
    """A node of the leak tree: a call site, the bytes and blocks leaked under it, its callees."""

    __slots__ = ("frame", "size", "count", "children")

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame
        self.size = 0
        self.count = 0
        self.children: dict[Frame, LeakNode] = {}


def leak_tree(groups: Iterable[LeakGroup], depth: int = MAX_TREE_DEPTH) -> LeakNode:
    """The leak groups as a tree by call site, outermost caller first (the root has no frame).

    Each group's stack (most recent call first) is walked from its last frame to its
    first, at most ``depth`` frames (the allocation site is always the last node).
    """
    root = LeakNode(None)
    for g in groups:
        stack = list(reversed(g.stack))
        if len(stack) > depth:
            stack = stack[: depth - 1] + stack[-1:]
        root.size += g.size
        root.count += g.count
        node = root
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = LeakNode(frame)
            child.size += g.size
            child.count += g.count
            node = child
    return root


def _frame(f: Frame) -> str:
    return f"<code>{escape(f.name)}</code> {escape(f.filename)}:{f.lineno}"


def _tree_html(node: LeakNode, total: int, level: int, out: list[str]) -> None:
    for child in sorted(node.children.values(), key=lambda c: (-c.size, -c.count)):
        chain = [child]
        while len(chain[-1].children) == 1:
            (nxt,) = chain[-1].children.values()
            if (nxt.size, nxt.count) != (child.size, child.count):
                break
            chain.append(nxt)
        last = chain[-1]
        assert last.frame is not None
        width = max(1, round(120 * child.size / total)) if total else 1
        out.append(
            f'<details{" open" if level < 2 else ""} data-size="{child.size}" data-count="{child.count}" '
            f'data-site="{escape(last.frame.name)} {escape(last.frame.filename)}:{last.frame.lineno}"><summary><span class="mg-bar" style="width:{width}px"></span>'
            f'<span class="mg-size">{escape(_fmt_bytes(child.size))}</span> in {child.count} block(s): {_frame(last.frame)}'
            + (f" <small>(+{len(chain) - 1} caller frame(s))</small>" if len(chain) > 1 else "")
            + "</summary>"
        )
        if len(chain) > 1:
            out.append('<ol class="mg-chain">' + "".join(f"<li>{_frame(n.frame)}</li>" for n in chain if n.frame) + "</ol>")
        if not last.children:
            out.append('<div class="mg-leaf">allocation site</div>')
        _tree_html(last, total, level + 1, out)
        out.append("</details>")


# ---------------------------------------------------------------------------- sections
def _summary(result: ExitReport) -> str:
    program = " ".join(result.argv) or "?"
    status = "?" if result.program_status is None else str(result.program_status)
    verdict = (
        f'<span class="mg-bad">{len(result.reports)} finding(s), {escape(_fmt_bytes(result.leaked_bytes))} leaked in '
        f"{result.leaked_blocks} block(s)</span>" if result.found else '<span class="mg-ok">no leaks or heap errors found</span>'
    )
    rows = [
        ("result", verdict),
        ("program", f"<code>{escape(program)}</code> (pid {result.pid}, exit status {escape(status)})"),
        ("created", escape(result.created)),
        ("versions", f"memguard {escape(result.memguard_version)}, Python {escape(result.python_version)}"),
        ("suppressed", f"{len(result.suppressed)} finding(s)"),
        ("outside only=", f"{len(result.out_of_scope_reports) + len(result.out_of_scope_leaks)} finding(s)"),
    ]
    if result.heap_closed:
        rows.append(("heap", "closed before exit: no final check, no leak list"))
    for key, value in sorted((result.stats or {}).items()):
        rows.append((key.replace("_", " "), escape(str(value))))
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="mg-summary" id="mg-summary">{cells}</table>'


def _finding(r: Report) -> str:
    return (
        f'<details class="mg-finding" open><summary><b>{escape(r.kind)}</b>{escape(r.headline().removeprefix(r.kind))} '
        f"<small>at {escape(r.location())}</small></summary><pre>{escape(str(r))}</pre></details>"
    )


def _suppressions(result: ExitReport) -> str:
    rows = summarize(result.suppressed)
    if not rows:
        return ""
    cells = "".join(
        f"<tr><td><code>{escape(rule.text)}</code></td><td>{escape(rule.filename)}:{rule.lineno}</td>"
        f'<td data-sort="{n}">{n}</td><td data-sort="{b}">{escape(_fmt_bytes(b))}</td></tr>' for rule, n, b in rows
    )
    return ('<h2 id="mg-suppressed">Suppressions used</h2><table class="mg-summary mg-sortable">'
            f"<thead><tr><th>rule</th><th>file</th><th>count</th><th>bytes</th></tr></thead><tbody>{cells}</tbody></table>")


def render_html(result: ExitReport, width: int = DEFAULT_WIDTH) -> str:
    """The exit report as one self-contained HTML page (see the module)."""
    program = " ".join(result.argv) or "?"
    body = [f"<h1>memguard exit report: <code>{escape(program)}</code></h1>", _summary(result)]
    body.append(f'<h2 id="mg-findings-h">Findings ({len(result.reports)})</h2><div id="mg-findings">')
    body.extend(_finding(r) for r in result.reports)
    if not result.reports:
        body.append("<p>No corruption or misuse was found.</p>")
    body.append("</div>")
    body.append(f'<h2 id="mg-leaks-h">Leaks: {escape(_fmt_bytes(result.leaked_bytes))} in {result.leaked_blocks} block(s), '
                f"{len(result.leaks)} allocation site(s)</h2>")
    if result.leaks:
        out: list[str] = []
        _tree_html(leak_tree(result.leaks), result.leaked_bytes, 0, out)
        body.append('<div class="mg-tree" id="mg-leaks">' + "".join(out) + "</div>")
        body.append("<details><summary>Leak groups as LeakSanitizer prints them</summary><pre>"
                    + "\n\n".join(escape(f"Direct leak of {g}") for g in result.leaks) + "</pre></details>")
    else:
        body.append('<p id="mg-leaks">No leaks.</p>')
    body.append(_suppressions(result))
    body.append(f'<h2 id="mg-maps-h">Heap maps ({len(result.heap_maps)})</h2><div class="mg-maps" id="mg-maps">')
    body.extend(render_svg(m, width, standalone=False) for m in result.heap_maps)
    if not result.heap_maps:
        body.append("<p>No heap map in this report (made with report_format=json or html, while the heap is open).</p>")
    body.append("</div>")
    return _page(f"memguard exit report: {program}", "\n".join(body))


def render_maps_page(maps: Sequence[HeapMap], title: str, width: int = DEFAULT_WIDTH, intro: Sequence[str] = (),
                     side_by_side: bool = False) -> str:
    """Heap maps on a page of their own (one after the other, or side by side), after lines of text."""
    body = [f"<h1>{escape(title)}</h1>"] + [f"<p>{escape(line)}</p>" for line in intro]
    body.append(f'<div class="mg-maps{" mg-side" if side_by_side else ""}" id="mg-maps">')
    body.extend(render_svg(m, width, standalone=False) for m in maps)
    body.append("</div>")
    return _page(title, "\n".join(body))


def _as_map(obj: Any, width: int) -> HeapMap:
    if isinstance(obj, HeapMap):
        return obj
    if isinstance(obj, Mapping):
        return HeapMap.from_dump(obj)
    layout = getattr(obj, "layout_map", None)
    if layout is None:
        raise TypeError(f"cannot draw a heap map of {type(obj).__name__}: a GuardedHeap, an allocator "
                        "(BlockAllocator, MemPool, ObjectPool, BufPool, BuddyAllocator, StringTable, MemoryManager), "
                        "a HeapMap or a dump_stats() document is needed")
    return layout(width=width)  # type: ignore[no-any-return]


def heapmap(obj: Any, path: str | os.PathLike[str], width: int = DEFAULT_WIDTH) -> str:
    """Write the heap map of ``obj`` to ``path``: SVG for ``.svg``, a page for ``.html``/``.htm``.

    ``obj`` is a :class:`~memguard.GuardedHeap`, an allocator with ``layout_map()``
    (:class:`~memguard.BlockAllocator`, :class:`~memguard.MemPool`, :class:`~memguard.ObjectPool`,
    :class:`~memguard.BufPool`, :class:`~memguard.BuddyAllocator`, :class:`~memguard.StringTable`), a
    :class:`~memguard.heapmaps.HeapMap`, a ``BlockAllocator.dump_stats()`` document, or a
    list of them (an HTML page shows them one after the other; SVG takes one).  The file
    is new, 0600, renamed into place.  Returns the path written.

    :raises ValueError: another suffix, or several maps for an ``.svg``.
    :raises TypeError: ``obj`` draws no map.
    """
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in (".svg", ".html", ".htm"):
        raise ValueError(f"a heap map is written as .svg or .html, not {suffix or 'a file without suffix'!r}: {name}")
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    if not items:
        raise ValueError("no heap map to write")
    maps = [_as_map(o, width) for o in items]
    if suffix == ".svg":
        if len(maps) != 1:
            raise ValueError(f"an .svg file holds one heap map, got {len(maps)}: write an .html page")
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + render_svg(maps[0], width)
    else:
        text = render_maps_page(maps, maps[0].title if len(maps) == 1 else "memguard heap maps", width)
    return write_report_file(name, text)


def defrag_snapshot(blocks: BlockAllocator, path: str | os.PathLike[str], algorithm: str = "full",
                    max_bytes_per_pass: int = 0, max_allocations_per_pass: int = 0,
                    width: int = DEFAULT_WIDTH) -> DefragStats:
    """Defragment ``blocks`` (as :meth:`BlockAllocator.defragment`) and write its maps before and after to ``path``.

    The ``.html`` page shows both maps side by side, with the bytes and allocations moved,
    the pages freed and the fragmentation before and after.  Returns the defragmentation's
    statistics; the file is new, 0600, renamed into place.

    :raises ValueError: ``path`` does not end in ``.html`` (or the defragmenter's own errors).
    """
    name = os.fspath(path)
    if os.path.splitext(name)[1].lower() not in (".html", ".htm"):
        raise ValueError(f"the before/after page is written as .html: {name}")
    before_frag = blocks.stats().fragmentation
    before = blocks.layout_map(width=width, title=f"before: {blocks.name!r}")
    stats = blocks.defragment(algorithm, max_bytes_per_pass, max_allocations_per_pass)
    after_stats = blocks.stats()
    after = blocks.layout_map(width=width, title=f"after: {blocks.name!r}")
    intro = [
        f"algorithm {algorithm}: {stats.bytes_moved} byte(s) moved in {stats.allocations_moved} allocation(s), "
        f"{stats.pages_freed} page(s) freed ({stats.bytes_freed} bytes), {stats.passes} pass(es)",
        f"fragmentation {before_frag:.1%} before, {after_stats.fragmentation:.1%} after; "
        f"{len(before.rows)} page(s) before, {len(after.rows)} after",
    ]
    write_report_file(name, render_maps_page([before, after], f"defragmentation of {blocks.name!r}", width, intro,
                                             side_by_side=True))
    return stats


# ---------------------------------------------------------------------------- the pytest run
def _leak_group(d: Mapping[str, Any]) -> LeakGroup:
    stack = tuple(Frame(str(f.get("filename", "?")), int(f.get("lineno", 0)), str(f.get("name", "?")))
                  for f in d.get("stack", ()) if isinstance(f, Mapping))
    return LeakGroup(stack, int(d.get("size", 0)), int(d.get("count", 0)), tuple(d.get("addresses", ())))


def _findings_and_leaks(findings: Sequence[Any], leaks: Sequence[Any], out: list[str]) -> None:
    for f in findings:
        try:
            out.append(_finding(Report.from_dict(dict(f))))
        except (KeyError, TypeError, ValueError):
            out.append(f"<pre>{escape(f)}</pre>")
    groups = []
    for g in leaks:
        try:
            groups.append(_leak_group(g))
        except (TypeError, ValueError, AttributeError):
            continue
    if groups:
        total = sum(g.size for g in groups)
        tree: list[str] = []
        _tree_html(leak_tree(groups), total, 0, tree)
        out.append(f'<div class="mg-tree">{"".join(tree)}</div>')


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def render_pytest_html(doc: Mapping[str, Any], heap_maps: Sequence[HeapMap] = (), width: int = DEFAULT_WIDTH) -> str:
    """The pytest plugin's run report (the ``--memguard-report`` document) as one HTML page.

    A table of the checked tests (verdict, leaked bytes, allocations, peak; with
    JavaScript, sortable by any column), then, for each test that failed or warned and for
    the session itself, its findings and its leaks as a tree by call site, then
    ``heap_maps``: the maps of the process heap and of the allocators registered with it
    at the end of the session (the plugin passes them; the JSON document has none).
    """
    totals = doc.get("totals") or {}
    tests = list(doc.get("tests") or ())
    versions = doc.get("versions") or {}
    body = ["<h1>memguard: pytest run</h1>"]
    rows = [(k.replace("_", " "), escape(v if not isinstance(v, (dict, list)) else len(v)))
            for k, v in sorted(totals.items()) if not isinstance(v, (dict, list))]
    rows.insert(0, ("created", escape(doc.get("created", ""))))
    rows.insert(1, ("versions", escape(", ".join(f"{k} {v}" for k, v in versions.items()))))
    body.append('<table class="mg-summary" id="mg-summary">'
                + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    body.append(f'<h2 id="mg-findings-h">Tests ({len(tests)})</h2>')
    cells = []
    for t in tests:
        verdict = "failed" if t.get("failed") else "warned" if t.get("warned") else "passed"
        cls = "mg-bad" if verdict == "failed" else "mg-ok" if verdict == "passed" else ""
        leaked, allocations, peak = (_int(t.get(k)) for k in ("leaked_bytes", "allocations", "peak_bytes"))
        cells.append(
            f'<tr class="mg-test"><td><code>{escape(t.get("nodeid", ""))}</code></td><td class="{cls}">{verdict}</td>'
            f'<td data-sort="{leaked}">{escape(_fmt_bytes(leaked))}</td><td data-sort="{allocations}">{allocations}</td>'
            f'<td data-sort="{peak}">{escape(_fmt_bytes(peak))}</td><td>{escape(t.get("reason", ""))}</td></tr>'
        )
    body.append('<table class="mg-summary mg-sortable" id="mg-tests"><thead><tr><th>test</th><th>memguard</th>'
                "<th>leaked</th><th>allocations</th><th>peak</th><th>reason</th></tr></thead><tbody>"
                + "".join(cells) + "</tbody></table>")
    body.append('<div id="mg-findings">')
    for t in tests:
        if not (t.get("findings") or t.get("leaks")):
            continue
        out: list[str] = []
        _findings_and_leaks(t.get("findings") or (), t.get("leaks") or (), out)
        body.append(f'<details class="mg-finding" open><summary><b>{escape(t.get("nodeid", ""))}</b> '
                    f'{escape(t.get("reason", ""))}</summary>{"".join(out)}</details>')
    session = doc.get("session") or {}
    if session.get("findings") or session.get("leaks"):
        out = []
        _findings_and_leaks(session.get("findings") or (), session.get("leaks") or (), out)
        body.append(f'<details class="mg-finding" open><summary><b>outside any test</b> '
                    f'{escape(session.get("reason", ""))}</summary>{"".join(out)}</details>')
    body.append("</div>")
    body.append(f'<h2 id="mg-maps-h">Heap maps at the end of the session ({len(heap_maps)})</h2>'
                '<div class="mg-maps" id="mg-maps">')
    body.extend(render_svg(m, width, standalone=False) for m in heap_maps)
    if not heap_maps:
        body.append("<p>No heap map: the process heap was not used in this process (not run with --memguard, "
                    "or the tests ran in xdist workers).</p>")
    body.append("</div>")
    return _page("memguard: pytest run", "\n".join(body))
