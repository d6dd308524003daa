"""The dependency rule of docs/architecture.md: lower layers never import upper ones.

Every module of the package is read (not imported) and each ``memguard`` import it makes
at run time (anywhere but under ``if TYPE_CHECKING:``) is checked against the layers
below.  A new module must be given a layer here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import memguard

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "memguard"
PLUGINS = ROOT / "plugins"

#: Layers, lowest first: ``(name, module patterns)``; a pattern ending in ``.*`` covers a
#: sub-package and its modules.  Keep in step with docs/architecture.md.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("memguard._location", "memguard._version", "memguard._lazy", "memguard.errors", "memguard.kinds",
                    "memguard.arguments")),
    ("native", ("memguard.native", "memguard.native.*")),
    ("records", ("memguard.stacks", "memguard.report", "memguard.leaks", "memguard.findings",
                 "memguard.heap.layout", "memguard.heapmaps", "memguard.reachability")),
    ("extension boundary", ("memguard.hookspecs", "memguard.seams", "memguard.plugin_manager")),
    ("checker contract", ("memguard.checker",)),
    ("heap", ("memguard.heap", "memguard.heap.*")),
    ("checkers over the heap", ("memguard.allocators", "memguard.allocators.*", "memguard.refaudit",
                                "memguard.clibs", "memguard.clibs.*")),
    ("reporting", ("memguard.reporting", "memguard.reporting.*", "memguard.options")),
    ("process heap", ("memguard.process",)),
    ("integrations", ("memguard.numpy", "memguard.ctypes_buffers", "memguard.cffi")),
    ("adapters", ("memguard.cli", "memguard.__main__", "memguard.pytest_plugin", "memguard.pytest_session",
                  "memguard.pytest_limits", "memguard.pytest_fixtures", "memguard.pytest_report",
                  "memguard")),
]


def layer_of(module: str) -> int:
    """The index of ``module``'s layer (exact names win over sub-package patterns)."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                if module.startswith(pattern[:-1]):
                    candidate = (len(pattern) - 2, index)
                else:
                    continue
            elif module == pattern:
                candidate = (len(pattern) + 1000, index)
            else:
                continue
            if best is None or candidate > best:
                best = candidate
    if best is None:
        raise LookupError(f"{module} has no layer: add it to LAYERS and docs/architecture.md")
    return best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """``(line, imported memguard module)`` for every import outside ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "memguard")
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}:{node.lineno}: relative import; memguard imports absolutely"
            if node.module and node.module.split(".")[0] == "memguard":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    # ``from memguard.pkg import module`` imports that module.
                    found.append((node.lineno, sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                                  or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_lower_layers_never_import_upper_ones(path: Path) -> None:
    module = module_name(path)
    mine = layer_of(module)
    tree = ast.parse(path.read_text(), str(path))
    for line, imported in runtime_imports(tree, module):
        if imported == "memguard" and module != "memguard":
            # Only the facade's ``__version__`` is light enough to import from below.
            continue
        theirs = layer_of(imported)
        assert theirs <= mine, (
            f"{module}:{line} imports {imported}: layer '{LAYERS[theirs][0]}' is above "
            f"'{LAYERS[mine][0]}' (see docs/architecture.md)"
        )
        # Importing a sub-package's module runs the sub-package's __init__ first.
        parts = imported.split(".")
        for depth in range(2, len(parts)):
            package = ".".join(parts[:depth])
            if package == module:
                continue
            init = PACKAGE.parent / package.replace(".", "/") / "__init__.py"
            for _, indirect in runtime_imports(ast.parse(init.read_text()), package):
                assert layer_of(indirect) <= mine, (
                    f"{module}:{line} imports {imported}, whose package {package} imports {indirect} "
                    f"(layer '{LAYERS[layer_of(indirect)][0]}'): make the package facade lazy"
                )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memguard"):
            for alias in node.names:
                assert not alias.name.startswith("_") or alias.name == "__version__", (
                    f"{module_name(path)}:{node.lineno} imports the private name {alias.name} of {node.module}"
                )


def test_the_facade_imports_nothing_until_a_name_is_used() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    imported = [m for _, m in runtime_imports(tree, "memguard")]
    assert sorted(imported) == ["memguard._lazy", "memguard._version"]
    for name in memguard.__all__:
        assert getattr(memguard, name) is not None, name


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda p: p.name)
def test_first_party_plugins_use_only_public_names(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "memguard" or not alias.name.startswith("memguard."), (
                    f"{path.name}:{node.lineno} imports {alias.name}; plugins use the memguard facade"
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memguard"):
            assert node.module == "memguard", f"{path.name}:{node.lineno}: from {node.module} import …"
            for alias in node.names:
                assert alias.name in memguard.__all__, f"{path.name}:{node.lineno}: {alias.name} is not public"
        elif isinstance(node, ast.Attribute) and re.fullmatch(r"_[a-z]\w*", node.attr):
            base = ast.unparse(node.value)
            assert base in ("self", "cls") or not base.split(".")[0] in ("memguard", "heap", "pool", "audit"), (
                f"{path.name}:{node.lineno}: {base}.{node.attr} is private"
            )


def test_the_walkthrough_in_docs_architecture_runs(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/architecture.md has no python example"
    for block in blocks:
        exec(compile(block, "docs/architecture.md", "exec"), {"__name__": "walkthrough"})
    assert capsys.readouterr().out.splitlines() == ["['pool-buffer-overflow']", "arena-reset-live"]


@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in ("__init__.py", "__main__.py")],
                         ids=lambda p: module_name(p))
def test_docs_architecture_names_every_module(path: Path) -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert re.search(rf"\b{re.escape(path.stem)}\b", text), f"docs/architecture.md does not mention {module_name(path)}"
