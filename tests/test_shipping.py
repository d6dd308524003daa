"""What ``pip install`` gives a user: built from the checkout, installed outside it, used from elsewhere.

The wheel must hold every module of the checkout, the first-party plugins under their
importable name ``memguard_plugins``, and their declarations in the ``memguard``
entry-point group, so that the documented import works, the process-wide heap loads them
by default (under pytest too) and a user can disable one by name.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the build needs from the checkout (what an sdist holds).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "memguard", "plugins")
#: The first-party plugins the distribution declares: entry-point name -> module.
DECLARED = {
    "pool_invariants": "memguard_plugins.pool_invariants",
    "bufpool_budget": "memguard_plugins.bufpool_budget",
    "defrag_verifier": "memguard_plugins.defrag_verifier",
    "strtab_invariants": "memguard_plugins.strtab_invariants",
    "manager_budget": "memguard_plugins.manager_budget",
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _can_build_without_isolation() -> bool:
    """The running environment has a setuptools that builds wheels by itself (no download)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    version = _version_tuple(importlib.metadata.version("setuptools"))
    if version < (64,):
        return False
    # Before 70.1, setuptools' bdist_wheel came from the separate "wheel" package.
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _pip(*args: str, cwd: Path, **env: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**_clean_env(), **env})
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MEMGUARD_OPTIONS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _is_memguard_entry(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(("memguard", "__editable__")) or lowered.endswith(".pth")


def _dependency_dirs() -> list[Path]:
    """Where the running environment keeps memguard's dependencies (pluggy, psutil, pytest)."""
    dirs: list[Path] = []
    for name in ("pluggy", "psutil", "pytest", "_pytest", "iniconfig", "packaging"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            parent = Path(spec.origin).resolve().parent.parent
            if parent not in dirs:
                dirs.append(parent)
    return dirs


def _dependencies_without_memguard(dest: Path) -> list[Path]:
    """A directory with the dependencies but none of the checkout's memguard (its editable install).

    Links every entry of the dependency directories except memguard's own, so the fresh
    environment sees memguard only as the wheel installed it.  Without symbolic links the
    directories are used as they are (the installed wheel comes first on ``sys.path``).
    """
    dest.mkdir()
    try:
        for directory in _dependency_dirs():
            for entry in directory.iterdir():
                target = dest / entry.name
                if not _is_memguard_entry(entry.name) and not target.exists():
                    target.symlink_to(entry, target_is_directory=entry.is_dir())
    except OSError:
        return _dependency_dirs()
    return [dest]


def _compiler() -> str | None:
    """The C compiler setuptools would use here, when it is installed."""
    import sysconfig

    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout's sources (the checkout itself is not written to)."""
    return _build_wheel(tmp_path_factory.mktemp("build"))


def _build_wheel(base: Path, **env: str) -> Path:
    src = base / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "*.so", "*.pyd")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = base / "dist"
    isolation = () if not _can_build_without_isolation() else ("--no-build-isolation",)
    _pip("wheel", "--no-deps", "-q", *isolation, "-w", str(out), str(src), cwd=base, **env)
    wheels = list(out.glob("memguard-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh virtual environment outside the checkout with the wheel installed: (python, site-packages)."""
    base = tmp_path_factory.mktemp("env")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False, symlinks=os.name != "nt")
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env(),
    ).stdout.strip())
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel), cwd=base)
    deps = _dependencies_without_memguard(base / "deps")
    (site / "memguard_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    return python, site


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=_clean_env())


def _doc_blocks_using_first_party_plugins() -> list[str]:
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## First-party plugins", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_wheel_holds_every_module_and_the_first_party_plugins(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "memguard").rglob("*.py")}
    expected.add("memguard/py.typed")
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "memguard" / "schemas").glob("*.json")}
    expected |= {"memguard_plugins/" + p.relative_to(ROOT / "plugins").as_posix()
                 for p in (ROOT / "plugins").rglob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith(("plugins/", "tests/"))]
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(dist_info).decode()
    memguard_group = entry_points.split("[memguard]", 1)[1].split("[", 1)[0]
    for name, module in DECLARED.items():
        assert f"{name} = {module}" in memguard_group
    import memguard_plugins

    assert set(memguard_plugins.FIRST_PARTY) == set(DECLARED.values())


def _extensions(names: set[str]) -> list[str]:
    return [n for n in names if n.startswith("memguard/_trampoline.") and n.endswith((".so", ".pyd"))]


def test_wheel_holds_the_trampolines_when_a_compiler_is_present(wheel: Path) -> None:
    if _compiler() is None:
        pytest.skip("no C compiler: the wheel is built without memguard._trampoline")
    assert len(_extensions(set(zipfile.ZipFile(wheel).namelist()))) == 1


@pytest.mark.skipif(os.name == "nt", reason="CC names the compiler on POSIX")
def test_wheel_builds_without_a_compiler(tmp_path: Path) -> None:
    built = _build_wheel(tmp_path, CC=str(tmp_path / "no-such-cc"))
    names = set(zipfile.ZipFile(built).namelist())
    assert not _extensions(names)
    assert "memguard/native/trampoline.py" in names and "memguard/heap/c_allocator.py" in names


def test_installed_trampolines_load(installed: tuple[Path, Path], tmp_path: Path) -> None:
    python, site = installed
    if _compiler() is None:
        pytest.skip("no C compiler: the wheel is built without memguard._trampoline")
    proc = _run(python, "-c", "from memguard.native import trampoline; import memguard._trampoline as t; "
                "print(trampoline.available(), t.__file__)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ok, where = proc.stdout.split()
    assert ok == "True" and Path(where).resolve().is_relative_to(site.resolve())


def test_installed_plugins_import_load_and_disable_by_name(installed: tuple[Path, Path], tmp_path: Path) -> None:
    python, site = installed
    snippets = _doc_blocks_using_first_party_plugins()
    assert any("memguard_plugins" in s for s in snippets)
    (tmp_path / "snippets.json").write_text(json.dumps(snippets))
    script = textwrap.dedent(
        """
        import importlib.metadata as md, json, sys

        for block in json.load(open("snippets.json")):
            exec(block, {})   # the docs' examples, as a user runs them

        import memguard, memguard_plugins
        from memguard_plugins import pool_invariants

        def names(heap):
            return {heap.plugins.get_name(p): p.__name__ for p in heap.plugins}

        loaded = memguard.GuardedHeap(name="loaded")
        count = memguard.load_entrypoint_plugins(loaded)
        skipped = memguard.GuardedHeap(name="skipped")
        memguard.load_entrypoint_plugins(skipped, disabled=["pool_invariants"])
        process = memguard.install()
        process_names = names(process)
        memguard.uninstall()
        print(json.dumps({
            "files": [memguard.__file__, memguard_plugins.__file__],
            "dist": str(md.distribution("memguard").locate_file("")),
            "declared": {ep.name: ep.value for ep in md.distribution("memguard").entry_points
                         if ep.group == "memguard"},
            "group": sorted(ep.name for ep in md.entry_points(group="memguard")),
            "count": count,
            "loaded": names(loaded),
            "same_module": [p for p in loaded.plugins if loaded.plugins.get_name(p) == "pool_invariants"]
                           == [pool_invariants],
            "skipped": names(skipped),
            "process": process_names,
        }))
        """
    )
    proc = _run(python, "-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert all(Path(f).resolve().is_relative_to(site.resolve()) for f in seen["files"]), seen["files"]
    assert not any(Path(f).resolve().is_relative_to(ROOT) for f in seen["files"])
    assert Path(seen["dist"]).resolve() == site.resolve()
    assert seen["declared"] == DECLARED
    assert "pool_invariants" in seen["group"]
    assert seen["count"] >= 1
    assert seen["loaded"]["pool_invariants"] == "memguard_plugins.pool_invariants" and seen["same_module"]
    assert "pool_invariants" not in seen["skipped"]
    assert seen["process"].get("pool_invariants") == "memguard_plugins.pool_invariants"


def test_installed_pytest_plugin_loads_first_party_plugins_unless_disabled(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    python, _ = installed
    (tmp_path / "test_uses_heap.py").write_text(textwrap.dedent(
        """
        import memguard

        def test_plugins():
            heap = memguard.process_heap()
            print("PLUGINS:", sorted(heap.plugins.get_name(p) for p in heap.plugins))
        """
    ))
    common = ("-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--memguard", "test_uses_heap.py")
    default = _run(python, *common, cwd=tmp_path)
    assert default.returncode == 0, default.stdout + default.stderr
    assert f"PLUGINS: {sorted(DECLARED)}" in default.stdout
    disabled = _run(python, *common, "--memguard-disable-plugin", "pool_invariants", cwd=tmp_path)
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    assert f"PLUGINS: {sorted(set(DECLARED) - {'pool_invariants'})}" in disabled.stdout


def test_wheel_carries_the_mit_license_its_metadata_names(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    licenses = [n for n in archive.namelist() if ".dist-info/" in n and n.rsplit("/", 1)[-1].startswith("LICENSE")]
    assert licenses, "no LICENSE file in the wheel"
    text = archive.read(licenses[0]).decode()
    assert text.startswith("MIT License") and text == (ROOT / "LICENSE").read_text()
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "MIT" in metadata
