"""The package's layout rules (the layout of DESIGN.md), read from the source with ``ast``: nothing is imported or run.

- no import cycle between the package's modules, counting imports inside functions too, and the package
  ``__init__`` that importing ``a.b.c`` runs first (a module's own ancestors excepted: they are already loading);
- at most 8 modules at the package root: everything else lives in a folder named for what it holds;
- no module over 400 lines unless its first line says why (``# Over 400 lines because ...``);
- every folder is a package whose ``__init__.py`` has a docstring saying what it holds.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nnunet_teachformer"
NAME = PACKAGE.name
MAX_ROOT_MODULES = 8
MAX_LINES = 400
LONG_REASON = "# Over 400 lines because "


def _modules():
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _import_graph(modules):
    def known(name):  # the module itself, or the module an imported attribute lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(known(a.name) for a in node.names if a.name.split(".")[0] == NAME)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    package = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                    base = package + ("." + base if base else "")
                if base.split(".")[0] == NAME:
                    imported.update(known(f"{base}.{a.name}") for a in node.names)
        for module in list(imported):
            parts = module.split(".")
            imported.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts)))
                            if not (name + ".").startswith(p + "."))
        imported.discard(name)
        imported.discard("")
        graph[name] = imported
    return graph


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycle_between_the_packages_modules():
    graph = _import_graph(_modules())
    assert graph[f"{NAME}.sharing.export"] >= {f"{NAME}.sharing.model_card"}  # the graph sees real imports
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_at_most_eight_modules_at_the_package_root():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_long_modules_say_why():
    long = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
            if len(p.read_text().splitlines()) > MAX_LINES and not p.read_text().startswith(LONG_REASON)]
    assert long == [], f"over {MAX_LINES} lines without a first line '{LONG_REASON}...': split them or say why"


def test_every_folder_is_a_package_that_says_what_it_holds():
    for folder in sorted(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder} has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"
