"""The shape of the code, checked: imports run one way and nothing imports in a circle.

Every ``import`` of an animelite module is counted, also the ones inside
functions (a function-level import is still a dependency; it only hides it).
The layers, top to bottom (ARCHITECTURE.md explains them)::

    front ends    cli, server/, bench, face_report, contact_sheet, __main__, the package's __init__ (the API facade)
    drivers       pipeline (and the video and distributed drivers built on it)
    stages        faces/, tiling, quantize, sizing
    runtime       engine, store/
    foundations   convert/, styles, imageio, options, atomic, imageops, errors, guided, quality, torch_reference,
                  inputs

A module may import its own layer and the layers below it, never above; and
the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "animelite"

LAYERS = [
    ("front ends", {"cli", "server", "bench", "face_report", "contact_sheet", "__main__", "__init__"}),
    ("drivers", {"pipeline", "video", "distributed"}),
    ("stages", {"faces", "tiling", "quantize", "sizing"}),
    ("runtime", {"engine", "store"}),
    ("foundations", {"convert", "styles", "imageio", "options", "atomic", "imageops", "errors", "guided", "inputs",
                     "quality", "torch_reference"}),
]
LAYER_OF = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """animelite modules *name* imports anywhere in its file (resolved to modules that exist)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # `from .x import name` where name is not a module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "animelite":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "animelite":
                continue
            if mod not in known:
                found.add(f"MISSING:{mod}")
                continue
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in known else mod)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    missing = sorted({component(m) for m in modules()} - set(LAYER_OF))
    assert not missing, f"modules with no layer (add them to LAYERS and ARCHITECTURE.md): {missing}"


def test_every_import_names_a_module_that_exists():
    broken = [f"{src} imports {dst[8:]}" for src, targets in graph().items() for dst in targets
              if dst.startswith("MISSING:")]
    assert not broken, "imports of modules that do not exist:\n" + "\n".join(sorted(broken))


def test_imports_run_one_way():
    wrong = []
    for src, targets in graph().items():
        for dst in targets:
            if dst.startswith("MISSING:"):
                continue
            a, b = component(src), component(dst)
            if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] < LAYER_OF[a]:
                wrong.append(f"{src} ({LAYERS[LAYER_OF[a]][0]}) imports {dst} ({LAYERS[LAYER_OF[b]][0]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles():
    g = {k: {m for m in v if not m.startswith("MISSING:")} for k, v in graph().items()}
    # a package's __init__ re-exporting its own submodules is not a cycle of the design
    for name in g:
        g[name] = {m for m in g[name] if not (name.startswith(m + ".") and modules()[m].name == "__init__.py")}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_imports(tmp_path):
    """The checker must catch what the old code hid: an import inside a function."""
    src = tmp_path / "animelite"
    src.mkdir()
    (src / "__init__.py").write_text("")
    (src / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (src / "b.py").write_text("from animelite import a\n")
    known = {"animelite", "animelite.a", "animelite.b"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, src
    try:
        assert imports_of("animelite.a", src / "a.py", known) == {"animelite.b"}
        assert find_cycle({"animelite.a": {"animelite.b"}, "animelite.b": {"animelite.a"}}) is not None
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_file_opens_with_its_job(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    if path.name == "__init__.py" and not tree.body:
        return
    assert doc and len(doc.split()) >= 4, f"{path.name}: start with a docstring that says the file's one job"
