"""The layout stays as built: imports run one way, no cycles, no private names across packages, short functions.

Two layers (``src/objalign/__init__.py``): the library computes on arrays, the application runs the pipeline on a
dataset and calls only the library's public names. Inside the library: maps <- stats <- measures <- evaluation and
report (report never imports evaluation). A few foundation modules (errors, atomic writes, tables, the registry
class) are used by both layers.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "objalign"

LIBRARY = ("maps", "stats", "measures", "evaluation", "report")
FOUNDATION = ("errors", "atomic", "tables", "registry", "_compat", "__init__", "__main__")
#: what each library package may import (besides the foundation and itself)
LIBRARY_MAY_USE = {"maps": (), "stats": ("maps",), "measures": ("maps", "stats"),
                   "report": ("maps", "stats", "measures"), "evaluation": ("maps", "stats", "measures", "report")}
#: modules where objalign imports inside functions are allowed: the thin CLI and the lazy facades keep start-up fast
LAZY_OK = {"objalign", "objalign.cli", "objalign._compat"}
MAX_FUNCTION_LINES = 90  # code lines (no docstring, no blank lines); the aim is about 80
MAX_FILE_LINES = 650
MAX_LINE_CHARS = 120


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def _imports(name: str, path: Path):
    """``(target module, imported name or None, inside a function)`` for every objalign import of a module."""
    tree = ast.parse(path.read_text())
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in MODULES else base
                yield target, (None if target == full else alias.name), id(node) in in_function
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, id(node) in in_function


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    g = defaultdict(set)
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            if target in MODULES and target != name and name != "objalign":
                g[name].add(target)
    return g


def test_no_import_cycle_between_modules():
    """Tarjan's strongly connected components of the module graph (package ``__init__`` files left out: a package
    importing its own submodules to re-export them is not a cycle)."""
    g = {k: {t for t in v if not MODULES[t].name == "__init__.py"} for k, v in _graph().items()
         if MODULES[k].name != "__init__.py"}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_cycle_between_packages():
    """Edges into a package's ``__init__`` are left out, as in the module graph: a registry table there (e.g.
    ``objalign.crops.CROP_MODES``, names and lazy targets) imports nothing of its package."""
    pkg = defaultdict(set)
    for a, targets in _graph().items():
        for b in targets:
            if _top(a) != _top(b) and MODULES[b].name != "__init__.py":
                pkg[_top(a)].add(_top(b))
    pairs = sorted({tuple(sorted((a, b))) for a in pkg for b in pkg[a] if a in pkg.get(b, ())})
    assert not pairs, f"packages importing each other: {pairs}"


def test_no_private_name_across_packages():
    bad = []
    for name, path in MODULES.items():
        for target, imported, _ in _imports(name, path):
            if not target.startswith("objalign") or _top(target) == _top(name) or name in LAZY_OK - {"objalign.cli"}:
                continue
            private = any(p.startswith("_") and not p.startswith("__") for p in target.split(".")) or (
                imported is not None and imported.startswith("_") and not imported.startswith("__"))
            if private:
                bad.append(f"{name} -> {target}{'.' + imported if imported else ''}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_library_never_imports_the_application():
    bad = []
    for name, path in MODULES.items():
        layer = _top(name)
        if layer not in LIBRARY:
            continue
        allowed = set(LIBRARY_MAY_USE[layer]) | set(FOUNDATION) | {layer}
        for target, _, _ in _imports(name, path):
            if target.startswith("objalign") and _top(target) not in allowed:
                bad.append(f"{name} -> {target}")
    assert not bad, "library modules importing outside their layer:\n" + "\n".join(bad)


def test_objalign_imports_inside_functions_only_where_start_up_needs_them():
    bad = [f"{name} -> {target}" for name, path in MODULES.items() if name not in LAZY_OK
           for target, _, inside in _imports(name, path) if inside and target.startswith("objalign")]
    assert not bad, "objalign imports inside functions (they hide cycles; import at the top):\n" + "\n".join(bad)


def _code_lines(fn) -> int:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    lines = set()
    for stmt in body:
        for n in ast.walk(stmt):
            if hasattr(n, "lineno"):
                lines.update(range(n.lineno, (n.end_lineno or n.lineno) + 1))
    return len(lines)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_and_files_a_reader_can_hold(name):
    path = MODULES[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    long = [(fn.name, _code_lines(fn)) for fn in ast.walk(ast.parse(text))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(fn) > MAX_FUNCTION_LINES]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} code lines: {long}"
    wide = [i for i, line in enumerate(text.splitlines(), 1) if len(line) > MAX_LINE_CHARS]
    assert not wide, f"{path}: lines over {MAX_LINE_CHARS} characters: {wide[:5]}"


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """The checks are not vacuous: a library module importing the pipeline, or an objalign import inside a
    function, is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from objalign.pipeline import run\n\ndef f():\n    from objalign.maps import RidgeCV\n")
    found = list(_imports("objalign.stats.bad", bad))
    assert ("objalign.pipeline", "run", False) in found
    assert ("objalign.maps", "RidgeCV", True) in found
    assert _top("objalign.pipeline") not in set(LIBRARY_MAY_USE["stats"]) | set(FOUNDATION) | {"stats"}
