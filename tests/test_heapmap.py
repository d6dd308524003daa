"""Heap maps and the HTML pages: well formed (parsed with html5lib), complete, escaped, small."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import html5lib
import pytest

import memguard
from memguard.heapmaps import STATES, HeapMap, MapBlock, MapRow, escape, fragmentation_of, render_svg
from memguard.options import Options
from memguard.reporting.exitreport import SCHEMA_VERSION, ExitReport, ReportFileError, build_report, parse_report_text, render_json
from memguard.reporting.html import leak_tree, render_html, render_pytest_html

from hostile_program import EVIL_FILE, EVIL_NAME, hostile_report

ROOT = Path(__file__).resolve().parent.parent
NS = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def heap() -> Iterator[memguard.GuardedHeap]:
    h = memguard.GuardedHeap(on_error="report", name="t")
    yield h
    if not h.closed:
        h.close(check=False)


def parse_html(text: str) -> Any:
    """The document, parsed strictly: a parse error fails the test."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    return parser.parse(text)


def scripts(doc: Any) -> list[str]:
    return [s.text or "" for s in doc.iter(f"{NS}script")]


def texts(doc: Any) -> str:
    """The document's text, whitespace collapsed."""
    return " ".join("".join(doc.itertext()).split())


# ---------------------------------------------------------------------------- the SVG
def test_guarded_heap_svg_is_well_formed_xml_with_legend_totals_and_tooltips(heap: memguard.GuardedHeap) -> None:
    live = []
    for n in (16, 48, 100, 5000):  # (a loop, not a comprehension: its own frame before 3.12)
        live.append(heap.malloc(n))
    freed = heap.malloc(32)
    heap.free(freed)
    svg = heap.heapmap()
    root = ET.fromstring(svg)  # a standalone .svg must be XML
    assert root.tag == f"{SVG}svg"
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    for state in STATES:
        assert any(t.startswith(state) for t in titles), state  # the legend
    assert any(f"0x{live[3]:x}: 5000 bytes, live" in t for t in titles)
    assert any(f"0x{freed:x}: 32 bytes, quarantined" in t for t in titles)
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "fragmentation" in text and "large blocks (1)" in text and "arenas of" in text
    site = [t for t in titles if t.startswith(f"0x{live[0]:x}")][0]
    assert "allocated at test_guarded_heap_svg" in site and "test_heapmap.py" in site


def test_a_million_blocks_aggregate_into_runs() -> None:
    blocks = tuple(MapBlock(i * 16, 16, "live" if i % 3 else "free", i) for i in range(1_000_000))
    m = HeapMap("big", (MapRow("r", 0x1000, 16_000_000, blocks),))
    agg = m.aggregated(1000)
    assert len(agg.rows[0].blocks) <= 1000
    assert sum(b.count for b in agg.rows[0].blocks) == 1_000_000
    assert agg.totals()["live"] == m.totals()["live"] and agg.totals()["free"] == m.totals()["free"]
    svg = render_svg(m)
    assert len(svg) < 1 << 20
    ET.fromstring(svg)


def test_neighbouring_pure_runs_merge_into_one_rectangle() -> None:
    blocks = tuple(MapBlock(i * 8, 8, "live", i + 1) for i in range(100_000))
    agg = HeapMap("t", (MapRow("r", 0, 800_000, blocks),)).aggregated(1000)
    assert len(agg.rows[0].blocks) == 1 and agg.rows[0].blocks[0].count == 100_000
    assert agg.rows[0].blocks[0].mix == "live 100000/800000"


def test_wide_blocks_stay_blocks_of_their_own() -> None:
    blocks = (MapBlock(0, 500, "live", 1, "f a.py:1"), MapBlock(500, 300, "free"), MapBlock(800, 200, "leaked", 2))
    agg = HeapMap("t", (MapRow("r", 0x100, 1000, blocks),)).aggregated(1000)
    assert agg.rows[0].blocks == blocks


def test_escaping_and_xml_forbidden_characters() -> None:
    evil = '<script>alert(1)</script>"\x00\x1b\ud800'
    m = HeapMap(evil, (MapRow(evil, 0x10, 100, (MapBlock(0, 50, "live", 1, evil),)),))
    svg = render_svg(m)
    root = ET.fromstring(svg)
    assert not list(root.iter(f"{SVG}script")) and "<script>" not in svg
    assert escape(evil) == "&lt;script&gt;alert(1)&lt;/script&gt;&quot;\ufffd\ufffd\ufffd"


def test_fragmentation_figure() -> None:
    assert fragmentation_of([]) == 0.0
    assert fragmentation_of([100]) == 0.0
    assert fragmentation_of([50, 50]) == 0.5


def test_heap_map_json_round_trip_and_hostile_input() -> None:
    m = HeapMap("t", (MapRow("r", 0x10, 100, (MapBlock(0, 50, "live", 1, "f a.py:1", 1, "", 0x10),)),), 0.25, ("n",))
    assert HeapMap.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    bad = m.to_dict()
    bad["rows"][0]["blocks"][0][2] = "<script>"
    with pytest.raises(ValueError, match=r"rows\[0\]\.blocks\[0\]\[2\]: expected one of live"):
        HeapMap.from_dict(bad)
    bad["rows"][0]["blocks"][0] = [1, 2]
    with pytest.raises(ValueError, match="an array of 8 fields"):
        HeapMap.from_dict(bad)
    with pytest.raises(ValueError, match="fragmentation"):
        HeapMap.from_dict({"fragmentation": 7})


def test_block_allocator_map_dump_and_mempool_map(heap: memguard.GuardedHeap) -> None:
    with memguard.BlockAllocator(page_size=4096, heap=heap, name="b") as blocks:
        allocs = [blocks.allocate(100) for _ in range(80)]
        for a in allocs[::2]:
            blocks.free(a)
        m = blocks.layout_map()
        assert len(m.rows) == blocks.stats().pages
        assert m.fragmentation == blocks.stats().fragmentation
        assert m.totals()["live"] == (40, 4000)
        dump = json.loads(json.dumps(blocks.dump_stats()))
        assert dump["Total"]["AllocationCount"] == 40 and dump["Total"]["BlockCount"] == len(m.rows)
        page = dump["Pages"][0]
        assert {"Offset", "Size", "Type", "Serial", "Site"} <= set(page["Suballocations"][0])
        assert page["UsedBytes"] + page["UnusedBytes"] == page["Size"]
        drawn = HeapMap.from_dump(dump)
        assert drawn.totals()["live"] == (40, 4000) and len(drawn.rows) == len(m.rows)
        ET.fromstring(blocks.heapmap())
        pool_map = blocks.mempool.layout_map()
        assert pool_map.totals()["live"] == (40, 4000)
        ET.fromstring(blocks.mempool.heapmap())
        for a in allocs[1::2]:
            blocks.free(a)
    with pytest.raises(ValueError, match="not a block allocator dump"):
        HeapMap.from_dump({"Pages": [{}]})


def test_memguard_heapmap_writes_svg_and_html_0600(heap: memguard.GuardedHeap, tmp_path: Path) -> None:
    heap.malloc(10)
    svg = memguard.heapmap(heap, tmp_path / "h.svg")
    page = memguard.heapmap(heap, tmp_path / "h.html")
    assert stat.S_IMODE(os.stat(svg).st_mode) == 0o600 and stat.S_IMODE(os.stat(page).st_mode) == 0o600
    ET.parse(svg)
    doc = parse_html(Path(page).read_text())
    assert len(list(doc.iter(f"{SVG}svg"))) == 1
    with pytest.raises(ValueError, match=r"\.svg or \.html"):
        memguard.heapmap(heap, tmp_path / "h.png")
    with pytest.raises(TypeError, match="cannot draw a heap map of int"):
        memguard.heapmap(3, tmp_path / "x.svg")
    with pytest.raises(ValueError, match="one heap map"):
        memguard.heapmap([heap, heap], tmp_path / "x.svg")


# ---------------------------------------------------------------------------- the exit report
def test_html_exit_report_has_everything_and_runs_no_program_script(heap: memguard.GuardedHeap) -> None:
    result, blocks = hostile_report(heap)
    assert result.reports and len(result.leaks) >= 3 and len(result.heap_maps) == 2
    page = render_html(result)
    doc = parse_html(page)
    # Only memguard's own script, and a CSP that allows nothing else.
    assert len(scripts(doc)) == 1 and "alert" not in scripts(doc)[0]
    csp = [m.get("content") for m in doc.iter(f"{NS}meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "script-src 'sha256-" in csp[0] and "default-src 'none'" in csp[0]
    assert not [e for e in doc.iter() if any(k.startswith("on") for k in e.attrib)]
    assert not list(doc.iter(f"{NS}img"))
    assert EVIL_NAME in texts(doc) and EVIL_FILE in texts(doc)  # shown, as text
    # every finding, with its stacks and hexdump
    findings = [d for d in doc.iter(f"{NS}details") if "mg-finding" in (d.get("class") or "")]
    assert len(findings) == len(result.reports)
    pre = " ".join(p.text or "" for p in doc.iter(f"{NS}pre"))
    assert "bad bytes in brackets" in pre and "[41]" in pre
    # every leak group: its allocation site in the tree, its bytes at the root
    tree = [d for d in doc.iter(f"{NS}div") if d.get("id") == "mg-leaks"][0]
    tree_text = " ".join(tree.itertext())
    for g in result.leaks:
        assert g.stack[0].name in tree_text
    # the heap maps
    svgs = list(doc.iter(f"{SVG}svg"))
    assert len(svgs) == 2 and len(list(svgs[0].iter(f"{SVG}g"))) >= 2
    assert any("leaked" in (t.text or "") for t in svgs[0].iter(f"{SVG}title"))
    blocks.close()


def test_leak_tree_sums_by_call_site() -> None:
    from memguard.leaks import LeakGroup
    from memguard.stacks import Frame

    main, a, b = Frame("m.py", 1, "main"), Frame("a.py", 2, "a"), Frame("b.py", 3, "b")
    root = leak_tree([LeakGroup((a, main), 100, 2), LeakGroup((b, main), 50, 1), LeakGroup((a,), 7, 1)])
    assert (root.size, root.count) == (157, 4)
    assert root.children[main].size == 150 and root.children[main].children[a].size == 100
    assert root.children[a].size == 7


def test_json_keeps_the_maps_and_old_files_still_read(heap: memguard.GuardedHeap) -> None:
    result, blocks = hostile_report(heap)
    doc = json.loads(render_json(result))
    assert doc["schema_version"] == SCHEMA_VERSION == 2 and len(doc["heap_maps"]) == 2
    again = parse_report_text(json.dumps(doc))
    assert [m.rows for m in again.heap_maps] == [m.rows for m in result.heap_maps]
    assert [m.fragmentation for m in again.heap_maps] == pytest.approx([m.fragmentation for m in result.heap_maps], abs=1e-6)
    doc["schema_version"] = 1
    del doc["heap_maps"]
    assert parse_report_text(json.dumps(doc)).heap_maps == ()
    doc["heap_maps"] = [{"rows": [{"blocks": [[0, 1, "evil", 0, "", 1, "", 0]]}]}]
    with pytest.raises(ReportFileError, match=r"heap_maps\[0\]\.rows\[0\]\.blocks\[0\]\[2\]"):
        parse_report_text(json.dumps(doc))
    text_only = build_report(heap, Options())
    assert text_only.heap_maps == ()  # the text report does not walk the heap
    blocks.close()


def test_cli_report_html_and_report_format_html(tmp_path: Path) -> None:
    program = tmp_path / "app.py"
    program.write_text(
        "import sys\nsys.path.insert(0, %r)\nimport memguard\nfrom hostile_program import evil_function\n"
        "heap = memguard.install()\nkeep = [evil_function(lambda: heap.malloc(40))() for _ in range(2)]\n"
        % str(Path(__file__).parent)
    )
    env = {k: v for k, v in os.environ.items() if k != "MEMGUARD_OPTIONS"}
    for fmt in ("json", "html"):
        r = subprocess.run([sys.executable, "-m", "memguard", "run", "-o", f"log_path={tmp_path}/{fmt}",
                            "-o", f"report_format={fmt}", str(program)], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 23, r.stderr
    (json_file,) = tmp_path.glob("json.*")
    (html_file,) = tmp_path.glob("html.*.html")
    assert stat.S_IMODE(os.stat(html_file).st_mode) == 0o600
    out = tmp_path / "r.html"
    r = subprocess.run([sys.executable, "-m", "memguard", "report", "--format", "html", "-o", str(out), str(json_file)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    for path in (out, html_file):
        doc = parse_html(path.read_text())
        assert len(scripts(doc)) == 1 and EVIL_NAME in texts(doc)
        assert "80 B in 2 block(s)" in texts(doc)
    r = subprocess.run([sys.executable, "-m", "memguard", "report", "--format", "html", str(json_file)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "give it with -o" in r.stderr


def test_report_format_html_without_a_file_prints_text(heap: memguard.GuardedHeap, capsys: pytest.CaptureFixture[str]) -> None:
    from memguard.reporting.exitreport import emit

    heap.malloc(12)
    result = build_report(heap, Options(report_format="html"))
    assert emit(result) is None
    assert "Direct leak of 12 byte(s)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pytest
def test_pytest_memguard_html(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x=f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import memguard
        from hostile_program import evil_function

        def test_leaks(guarded_heap):
            evil_function(lambda: guarded_heap.malloc(64))()

        def test_clean(guarded_heap):
            guarded_heap.free(guarded_heap.malloc(8))
        """
    )
    result = pytester.runpytest_subprocess("-p", "memguard", "--memguard-html=out/r.html", "--memguard-report=out/r.json")
    result.assert_outcomes(passed=1, failed=1)
    page = (pytester.path / "out" / "r.html").read_text()
    doc = parse_html(page)
    assert len(scripts(doc)) == 1 and EVIL_NAME in texts(doc)
    rows = [r for r in doc.iter(f"{NS}tr") if r.get("class") == "mg-test"]
    assert len(rows) == 2
    assert "test_x.py::test_leaks" in texts(doc) and "64 B in 1 block(s)" in texts(doc)
    assert "HTML report:" in result.stdout.str()
    again = render_pytest_html(json.loads((pytester.path / "out" / "r.json").read_text()))
    parse_html(again)


def test_pytest_memguard_html_shows_the_process_heap_map_and_sorts_by_size(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_y="""
        import memguard

        def test_small():
            heap = memguard.process_heap()
            heap.free(heap.malloc(10))

        def test_big(guarded_heap):
            guarded_heap.free(guarded_heap.malloc(100000))
        """
    )
    result = pytester.runpytest_subprocess("-p", "memguard", "--memguard", "--memguard-html=r.html")
    result.assert_outcomes(passed=2)
    doc = parse_html((pytester.path / "r.html").read_text())
    maps = [d for d in doc.iter(f"{NS}div") if d.get("id") == "mg-maps"][0]
    svgs = list(maps.iter(f"{SVG}svg"))
    assert svgs and "guarded heap" in (svgs[0].get("aria-label") or "")
    assert list(svgs[0].iter(f"{SVG}g"))  # its rows
    table = [t for t in doc.iter(f"{NS}table") if t.get("id") == "mg-tests"][0]
    assert "mg-sortable" in (table.get("class") or "") and list(table.iter(f"{NS}thead"))
    cells = [td for td in table.iter(f"{NS}td") if td.get("data-sort") is not None]
    assert cells and all(td.get("data-sort", "").isdigit() for td in cells)
    assert len(scripts(doc)) == 1


def test_pytest_page_without_a_heap_says_so() -> None:
    doc = parse_html(render_pytest_html({"tests": [{"nodeid": "t::a", "leaked_bytes": "junk"}]}))
    assert "No heap map" in texts(doc)


def test_html_module_is_shipped_and_extra_lists_html5lib() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert "html5lib" in text and "selenium" in text


def test_defrag_example_writes_the_page(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "defrag_heapmap.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "moved" in r.stdout and "fragmentation" in r.stdout
    doc = parse_html((tmp_path / "defrag.html").read_text())
    assert len(list(doc.iter(f"{SVG}svg"))) == 2 and "byte(s) moved" in texts(doc)
    ET.parse(tmp_path / "blocks.svg")
    dump = json.loads((tmp_path / "blocks.json").read_text())
    assert HeapMap.from_dump(dump).rows


def test_heapmap_benchmark_quick_run() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_heapmap.py"), "--quick", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["blocks"] for row in rows if row["case"] == "guarded heap"] == [10_000, 100_000]
    assert all(row["svg_bytes"] < 4 << 20 and row["html_bytes"] < 4 << 20 for row in rows)


def test_ci_installs_chromium_and_sets_ci() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in text and "command -v chromium" in text
    assert "apt-get install -y -qq chromium chromium-driver" in text


# ---------------------------------------------------------------------------- every allocator
def svg_titles(svg: str) -> list[str]:
    """The tooltips of a standalone map, parsed as XML and as HTML (both strictly)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    parse_html(f"<!DOCTYPE html><html><head><title>t</title></head><body>{svg}</body></html>")
    return [t.text or "" for t in root.iter(f"{SVG}title")]


def test_object_pool_map_a_row_per_chunk(heap: memguard.GuardedHeap) -> None:
    pool = memguard.ObjectPool(40, objects_per_chunk=8, heap=heap, name="objs")
    objects = []
    for _ in range(10):  # (a loop, not a comprehension: its own frame before 3.12)
        objects.append(pool.get())
    pool.put(objects[1])
    pool.put(objects[2])
    m = pool.layout_map(leaked={objects[3]})
    assert sorted(r.label for r in m.rows) == ["chunk 0", "chunk 1"] and all(r.size == pool.stride * 8 for r in m.rows)
    assert [r.address for r in m.rows] == sorted(r.address for r in m.rows)
    t = m.totals()
    assert t["live"] == (7, 280) and t["leaked"] == (1, 40) and t["quarantined"] == (2, 80) and t["free"] == (6, 240)
    assert m.fragmentation == 0.0  # the free slots are one run at the end of chunk 1
    block = next(b for r in m.rows for b in r.blocks if b.address == objects[0])
    assert block.serial == 1 and "test_object_pool_map" in block.site
    titles = svg_titles(pool.heapmap())
    assert any(t.startswith(f"0x{objects[4]:x}: 40 bytes, live") and "allocated at test_object_pool_map" in t for t in titles)
    for o in objects[:1] + objects[3:]:
        pool.put(o)
    pool.destroy()
    gone = pool.layout_map()
    assert gone.rows == () and gone.notes == ("destroyed",)
    assert svg_titles(pool.heapmap())


def test_object_pool_map_fragmentation_counts_runs_of_free_slots(heap: memguard.GuardedHeap) -> None:
    pool = memguard.ObjectPool(16, objects_per_chunk=8, heap=heap, quarantine=0)
    objects = [pool.get() for _ in range(8)]
    for o in objects[::2]:
        pool.put(o)
    m = pool.layout_map()
    assert m.totals()["free"][0] == 4 and m.fragmentation == pytest.approx(0.75)
    for o in objects[1::2]:
        pool.put(o)
    pool.destroy()


def test_buddy_map_unbacked_offsets_only() -> None:
    buddy = memguard.BuddyAllocator(min_size=1 << 20, classes=3, factor=4)  # 1, 4, 16 MiB
    a = buddy.allocate(1 << 20)
    b = buddy.allocate(3 << 20)
    m = buddy.layout_map()
    (row,) = m.rows
    assert row.address == 0 and row.size == 16 << 20
    # a split 16 MiB parent is not drawn: its children cover it
    assert [(x.offset, x.size, x.state) for x in row.blocks] == [
        (0, 1 << 20, "live"), (1 << 20, 1 << 20, "free"), (2 << 20, 1 << 20, "free"), (3 << 20, 1 << 20, "free"),
        (4 << 20, 4 << 20, "live"), (8 << 20, 4 << 20, "free"), (12 << 20, 4 << 20, "free"),
    ]
    assert sum(x.size for x in row.blocks) == row.size
    assert m.fragmentation == pytest.approx(1 - 4 / 11)
    titles = svg_titles(buddy.heapmap())
    assert any(t.startswith("0x400000: 4194304 bytes, live, serial 2") for t in titles)
    buddy.release(a)
    buddy.release(b)
    m = buddy.layout_map()
    assert [(x.offset, x.size, x.state) for x in m.rows[0].blocks] == [(0, 16 << 20, "free")] and m.fragmentation == 0
    buddy.destroy()
    assert buddy.layout_map().rows == () and svg_titles(buddy.heapmap())


def test_buddy_map_backed_has_addresses_and_sites(heap: memguard.GuardedHeap, tmp_path: Path) -> None:
    buddy = memguard.BuddyAllocator(min_size=4096, classes=3, factor=2, backing=heap)
    r = buddy.allocate(5000)
    m = buddy.layout_map(leaked={r.address})
    (row,) = m.rows
    assert row.address == buddy.base and m.totals()["leaked"] == (1, 8192) and m.totals()["free"] == (1, 8192)
    leaked = next(b for b in row.blocks if b.state == "leaked")
    assert leaked.address == r.address and "test_buddy_map_backed" in leaked.site
    ET.parse(memguard.heapmap(buddy, tmp_path / "buddy.svg"))
    buddy.release(r)
    buddy.destroy()


def test_bufpool_map_budget_row_by_address(heap: memguard.GuardedHeap) -> None:
    pool = memguard.BufPool(buffer_size=64, max_memory=4096, heap=heap, name="bufs")
    one = pool.allocate(3)
    two = pool.allocate(2)
    m = pool.layout_map(leaked={two.address})
    (row,) = m.rows
    assert row.size == 4096 and m.fragmentation == 0.0
    t = m.totals()
    assert t["live"] == (1, 192) and t["leaked"] == (1, 128) and t["free"] == (1, 4096 - 320)
    assert [b.address for b in row.blocks if b.state != "free"] == sorted([one.address, two.address])
    titles = svg_titles(pool.heapmap())
    tip = next(x for x in titles if x.startswith(f"0x{one.address:x}: 192 bytes, live, serial 1"))
    assert "3 buffer(s) of 64 bytes" in tip and "allocated at test_bufpool_map" in tip
    one.release()
    two.release()
    pool.close()
    assert pool.layout_map().rows == () and pool.layout_map().notes == ("closed",)


def test_string_table_map_escapes_the_strings(heap: memguard.GuardedHeap, tmp_path: Path) -> None:
    table = memguard.StringTable(heap, name="names")
    evil = table.intern(EVIL_NAME)
    plain = table.intern("hello")
    table.intern("hello")
    m = table.layout_map(leaked={plain.address})
    (row,) = m.rows
    assert row.size == len(EVIL_NAME) + 1 + 6 and m.totals()["live"] == (1, len(EVIL_NAME) + 1)
    assert m.totals()["leaked"] == (1, 6)
    tip = next(b for b in row.blocks if b.address == plain.address)
    assert tip.what == "string 'hello', 2 reference(s)" and "test_string_table_map" in tip.site
    svg = table.heapmap()
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    titles = svg_titles(svg)
    assert any(t.startswith(f"0x{evil.address:x}: {len(EVIL_NAME) + 1} bytes, live") and EVIL_NAME in t for t in titles)
    page = Path(memguard.heapmap(table, tmp_path / "strings.html")).read_text()
    doc = parse_html(page)
    assert len(scripts(doc)) == 1 and "alert" not in scripts(doc)[0]
    assert not [e for e in doc.iter() if e.tag.endswith("script") and "alert" in (e.text or "")]
    # JSON keeps what a block holds (a ninth field) and reads it back
    again = HeapMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    # a string whose bytes changed is drawn corrupt
    ctypes_memset(plain.address, 0x58, 1)
    assert any(b.state == "corrupt" for b in table.layout_map().rows[0].blocks)
    table.verify()  # restores the bytes
    table.release(evil)
    table.release(plain)
    table.release(plain)
    table.close()
    assert table.layout_map().rows == () and svg_titles(table.heapmap())


def ctypes_memset(address: int, value: int, n: int) -> None:
    import ctypes

    ctypes.memset(address, value, n)


def test_every_allocator_in_one_page_and_in_the_exit_report(heap: memguard.GuardedHeap, tmp_path: Path) -> None:
    objs = memguard.ObjectPool(32, objects_per_chunk=4, heap=heap)
    bufs = memguard.BufPool(buffer_size=64, max_memory=1024, heap=heap)
    buddy = memguard.BuddyAllocator(min_size=4096, classes=2, factor=2, backing=heap)
    table = memguard.StringTable(heap)
    keep = (objs.get(), bufs.allocate(1), buddy.allocate(10), table.intern("x"))
    page = memguard.heapmap([heap, objs, bufs, buddy, table], tmp_path / "all.html")
    doc = parse_html(Path(page).read_text())
    assert len(list(doc.iter(f"{SVG}svg"))) == 5
    result = build_report(heap, Options(report_format="json"))
    titles = [m.title for m in result.heap_maps]
    for name in ("object pool", "buffer pool", "buddy allocator", "string table"):
        assert any(t.startswith(name) for t in titles), (name, titles)
    assert not any(t.startswith("pool ") for t in titles)  # each allocator's MemPool is drawn by its owner
    parse_report_text(render_json(result))
    objs.put(keep[0])
    keep[1].release()
    buddy.release(keep[2])
    table.release(keep[3])
    for a in (objs, bufs, buddy, table):
        a.close()


def test_every_checker_draws_its_map_through_one_method_and_a_checker_without_one_says_so() -> None:
    heap = memguard.GuardedHeap()
    pool = memguard.ObjectPool(32, heap=heap)
    obj = pool.get()
    svg = pool.heapmap()
    assert svg.startswith("<svg") and type(pool).heapmap is memguard.Checker.heapmap
    with pytest.raises(TypeError, match="RefAudit draws no heap map"):
        memguard.RefAudit().heapmap()
    pool.put(obj)
    pool.destroy()
    heap.close(check=False)
