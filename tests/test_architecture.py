"""The shape of the code, checked: the import graph has no circle and nothing imports upward;
the engine probes no port with getattr/hasattr; docs/architecture.md's file map and lifecycle
tables say what the code has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from startline.engine.lifecycle import RUN_TRANSITIONS, WORKER_TRANSITIONS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "startline"
DOC = (ROOT / "docs" / "architecture.md").read_text()

LAYERS = {
    "startline.engine": 0,
    "startline.workloads": 0,
    "startline.backends": 1,
    "startline.simulate": 2,
    "startline.views": 2,
    "startline.urls": 3,
    "startline.compose": 3,
    "startline.inprocess": 3,
    "startline.live": 4,
    "startline.catalogue": 4,
    "startline.api": 5,
    "startline.testing": 5,
    "startline.cli": 6,
    "startline": 6,
}
"""Each part of the package and its layer: a module imports only from its own layer or below.
(``workloads``: the built-in workloads' definitions, which the engine's scenario expands.)"""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module → the package's modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("startline"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(mods)
                deps |= subs or {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("startline")}
        graph[name] = {d for d in deps if d != name}
    return graph


def layer(module: str) -> int:
    part = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[part]


def test_every_module_of_the_package_has_a_layer() -> None:
    for name in modules():
        layer(name)


def test_nothing_imports_upward() -> None:
    graph = imports(modules())
    upward = sorted((m, d) for m, deps in graph.items() for d in deps if layer(d) > layer(m))
    assert upward == []


def test_the_import_graph_has_no_circle() -> None:
    graph = imports(modules())
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join((*path[path.index(m) :], m))
        if m in done:
            return
        for d in sorted(graph.get(m, ())):
            visit(d, (*path, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())


def test_the_engine_probes_no_port_with_getattr_or_hasattr() -> None:
    """Optional capabilities are declared on the ports (``engine/ports.py``); the getattr calls
    left read a scenario's own fields, a ``module:function`` path, Trio's clock, and (in the two
    wrappers, counting and resilience) the wrapped call by its name to wrap it — none asks a
    port what it can do."""
    allowed = {"scenario.py": 3, "workload.py": 1, "connection.py": 1, "counting.py": 1, "resilience.py": 1}
    found: dict[str, int] = {}
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        text = path.read_text()
        assert "hasattr(" not in text, path.name
        n = len(re.findall(r"\bgetattr\(", text))
        if n:
            found[path.name] = n
    assert found == allowed


def doc_table(title: str) -> dict[str, set[str]]:
    """A two-column table of docs/architecture.md after a line starting with ``title``."""
    section = DOC[DOC.index(title) :]
    rows = {}
    for line in section.splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        left, right = (c.strip().strip("`") for c in line.strip("|").split("|")[:2])
        if left and not set(left) <= {"-"} and left not in ("from", "status"):
            rows[left] = {s.strip().strip("`") for s in right.split(",") if s.strip() not in ("", "—")}
    return rows


def test_the_documented_lifecycle_tables_are_the_codes() -> None:
    assert doc_table("Run statuses, as `lifecycle.RUN_TRANSITIONS`") == {
        str(k): {str(v) for v in vs} for k, vs in RUN_TRANSITIONS.items()
    }
    assert doc_table("Worker statuses, as `lifecycle.WORKER_TRANSITIONS`") == {
        str(k): {str(v) for v in vs} for k, vs in WORKER_TRANSITIONS.items()
    }


def test_the_documented_file_map_names_every_module() -> None:
    """Every module of the package is named in docs/architecture.md, and every engine file the
    doc names exists."""
    for path in modules().values():
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py":
            continue
        folder = rel.rsplit("/", 1)[0] + "/"
        assert any(f"`{n}`" in DOC for n in (rel, path.name, folder)), rel
    named = set(re.findall(r"^\| `(\w+\.py)` \|", DOC[DOC.index("## The engine") : DOC.index("## Backends")], re.M))
    assert named == {p.name for p in (PACKAGE / "engine").glob("*.py") if p.name != "__init__.py"}


def test_a_command_or_a_worker_process_imports_no_test_framework() -> None:
    """``trio.testing`` imports pytest when it is installed (0.14 s a process start): the package
    asks whether the clock is virtual without importing it (``determinism.on_virtual_time``)."""
    import subprocess
    import sys

    check = "import sys, startline.cli, startline.live.workers; assert 'pytest' not in sys.modules, 'pytest'"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_on_virtual_time_tells_a_mock_clock_from_the_real_one() -> None:
    import trio
    import trio.testing

    from startline.engine.determinism import on_virtual_time

    async def ask() -> bool:
        return on_virtual_time()

    assert trio.run(ask, clock=trio.testing.MockClock()) is True
    assert trio.run(ask) is False
