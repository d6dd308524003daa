"""Every Python snippet in README.md and docs/ runs as written.

Each ```` ```python ```` block runs alone, in a fresh interpreter, in an empty directory. A
block that raises on purpose says so in the line before it,
``<!-- snippet raises: memguard.HeapCorruptionError -->``, and must raise exactly that;
every other block must exit with status 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- snippet raises: (?P<raises>[\w.]+) -->\n)?^```python\n(?P<code>.*?)^```", re.S | re.M)


def _snippets() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for n, m in enumerate(_BLOCK.finditer(text), 1):
            line = text.count("\n", 0, m.start("code")) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line} (#{n})", m["code"], m["raises"]))
    return found


SNIPPETS = _snippets()


def test_the_documents_have_snippets() -> None:
    assert len(SNIPPETS) >= 20 and any(raises for _, _, raises in SNIPPETS)


@pytest.mark.parametrize(("where", "code", "raises"), SNIPPETS, ids=[w for w, _, _ in SNIPPETS])
def test_snippet_runs_as_written(where: str, code: str, raises: str | None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMGUARD", "COV_CORE"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=120)
    if raises is None:
        assert r.returncode == 0, f"{where} failed:\n{r.stderr}"
    else:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        name = raises.rsplit(".", 1)[-1]  # memguard.X is memguard.errors.X
        assert r.returncode == 1 and re.match(rf"([\w.]+\.)?{name}: ", last), f"{where} should raise {raises}:\n{r.stderr}"
