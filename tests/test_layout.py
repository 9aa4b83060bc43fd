"""The layout rules of DESIGN.md ("Arrows that must never exist", "Conventions"), checked on the source itself so
that a clean clone enforces them without ../shared/tools. Every import statement counts, at module level or
inside a function: a hidden import circle is still a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lowlabel"
SHARED = ("engine", "nn", "data", "metrics")
LOSSES_MAY_IMPORT = ("torch", "math", "typing", "__future__", "collections", "dataclasses", "lowlabel.errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (imports for annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _dotted(node.test).endswith("TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str) -> Iterator[tuple[int, str]]:
    """(line, imported module or module.attribute) for every import statement of module `name` that can run."""
    package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
    for node in _runtime_nodes(TREES[name]):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def lowlabel_edges(name: str) -> set[str]:
    """The lowlabel modules that module `name` imports (an imported attribute counts as its module)."""
    out = set()
    for _, target in imports(name):
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name and target != "lowlabel":
            out.add(target)
    return out


def where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(SRC.parent)}:{line}"


def test_shared_packages_never_import_methods_or_the_cli():
    bad = [f"{where(n, line)} imports {t}" for n in MODULES if n.split(".")[1:2] and n.split(".")[1] in SHARED
           for line, t in imports(n) if t.startswith(("lowlabel.methods", "lowlabel.cli"))]
    assert bad == []


def test_no_method_imports_another_method():
    bad = []
    for name in MODULES:
        parts = name.split(".")
        if parts[1:2] == ["methods"] and len(parts) > 2:
            for line, target in imports(name):
                other = target.split(".")
                if other[:2] == ["lowlabel", "methods"] and len(other) > 2 and other[2] != parts[2]:
                    bad.append(f"{where(name, line)} imports {target}")
    assert bad == []


def test_losses_import_only_torch_and_math():
    bad = [f"{where(n, line)} imports {t}" for n in MODULES if n.endswith(".losses") and ".methods." in n
           for line, t in imports(n) if not t.startswith(LOSSES_MAY_IMPORT)]
    assert bad == []


def test_nothing_imports_the_cli():
    bad = [f"{where(n, line)} imports {t}" for n in MODULES if n != "lowlabel.__main__"
           for line, t in imports(n) if t == "lowlabel.cli" or t.startswith("lowlabel.cli.")]
    assert bad == []


def test_no_import_circles():
    graph = {name: lowlabel_edges(name) for name in MODULES}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert [" -> ".join(c) for c in circles] == []


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
    """Every call with the chain of its ancestors."""
    stack: list[tuple[ast.AST, list[ast.AST]]] = [(tree, [])]
    while stack:
        node, parents = stack.pop()
        if isinstance(node, ast.Call):
            yield node, parents
        stack.extend((child, [*parents, node]) for child in ast.iter_child_nodes(node))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _inside_fork_rng(parents: list[ast.AST]) -> bool:
    """Inside `with torch.random.fork_rng(...)` or `with engine.runtime.seeded(...)`: the global stream is restored."""
    return any(isinstance(p, ast.With) and any(isinstance(i.context_expr, ast.Call) and
                                               _dotted(i.context_expr.func).endswith(("fork_rng", "seeded"))
                                               for i in p.items)
               for p in parents)


@pytest.mark.parametrize("rule", ["cuda", "torch.load", "matplotlib.use", "pyplot", "global reseed"])
def test_no_process_wide_side_effects_or_unsafe_calls(rule):
    bad = []
    for name, tree in TREES.items():
        for call, parents in _calls(tree):
            func = _dotted(call.func)
            if rule == "cuda" and func.endswith(".cuda") and not call.args and not call.keywords:
                bad.append(where(name, call.lineno))  # the device comes from the inputs or engine.runtime
            if rule == "torch.load" and func == "torch.load" and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in call.keywords):
                bad.append(where(name, call.lineno))
            if rule == "matplotlib.use" and func == "matplotlib.use":
                bad.append(where(name, call.lineno))  # figures go through lowlabel.report.figures
            if rule == "global reseed" and func in ("torch.manual_seed", "torch.default_generator.manual_seed",
                                                    "np.random.seed", "random.seed") and \
                    name != "lowlabel.engine.runtime" and not _inside_fork_rng(parents):
                bad.append(where(name, call.lineno))  # use an explicit generator, or fork_rng around the build
        if rule == "pyplot":
            bad += [where(name, line) for line, t in imports(name) if t.startswith("matplotlib.pyplot")]
    assert bad == [], f"rule '{rule}' broken at: {bad}"
