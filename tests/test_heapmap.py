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
    live = [heap.malloc(n) for n in (16, 48, 100, 5000)]
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
