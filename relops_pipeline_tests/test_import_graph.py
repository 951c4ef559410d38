"""The modules of relops_pipeline import each other one way: no import cycle, at module level
or inside functions (a function-level import is how a cycle hides until a call order trips on
it).

Every module under relops_pipeline/ is parsed with `ast` (nothing is imported). An edge goes
from a module to each relops_pipeline module it imports: `import a.b` and `from a.b import x`
give a.b, or a.b.x when x is a submodule; relative imports are resolved against the module's
package; a package stands for its __init__.py. Importing a submodule is an edge to the
submodule only (not to the packages above it), so a package __init__ that imports its
submodules, which import their siblings directly, is no cycle. Imports under
`if TYPE_CHECKING:` are not run, and not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import relops_pipeline

ROOT = Path(relops_pipeline.__file__).parent
PACKAGE = "relops_pipeline"


def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of the package (a package: its __init__.py)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the (first) import}."""
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for mod, path in modules.items():
        is_package = path.name == "__init__.py"
        package = mod if is_package else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # `import a.b.c` where only a.b is ours (c an attribute): the longest known prefix.
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != mod and (target == PACKAGE or target.startswith(PACKAGE + ".")):
                    graph[mod].setdefault(target, node.lineno)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected component that has one
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    scc.append(top)
                    if top == node:
                        break
                if len(scc) > 1:
                    sccs.append(sorted(scc))
    return [_cycle_in(graph, set(scc), scc[0]) for scc in sccs]


def _cycle_in(graph: dict[str, dict[str, int]], scc: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in scc:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its component")


def describe(graph: dict[str, dict[str, int]], modules: dict[str, Path], cycle: list[str]) -> str:
    hops = [f"  {a} -> {b}  ({modules[a].relative_to(ROOT.parent)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n".join(["import cycle:", *hops])


def test_the_graph_sees_every_kind_of_import():
    """The parser resolves what the rule needs: relative imports, submodules named in a `from`,
    function-level imports; and it skips TYPE_CHECKING blocks."""
    modules = module_files()
    graph = import_edges(modules)
    assert "relops_pipeline.cli.common" in graph["relops_pipeline.cli"]  # module level, `from pkg.mod import name`
    assert "relops_pipeline.cli.ingest" in graph["relops_pipeline.cli"]  # `from pkg import submodule`
    assert "relops_pipeline.definitions" in graph["relops_pipeline.cli.common"]  # inside a function


def test_no_import_cycles():
    modules = module_files()
    graph = import_edges(modules)
    cycles = find_cycles(graph)
    assert not cycles, "\n\n".join(describe(graph, modules, c) for c in cycles)


def test_lib_never_imports_dagster():
    """lib/ is plain Python over DuckDB: Dagster stays in defs/ (and the CLI's plumbing)."""
    offenders = []
    for mod, path in module_files().items():
        if not mod.startswith(f"{PACKAGE}.lib"):
            continue
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            offenders += [f"{path.relative_to(ROOT.parent)}:{node.lineno}" for n in names if n.split(".")[0] == "dagster"]
    assert not offenders, "lib/ imports dagster at: " + ", ".join(offenders)


def test_find_cycles_names_the_path():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"d": 1}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []
