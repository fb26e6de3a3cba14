"""The package's import graph has no cycles, and every module imports on its own.

The graph is read from the source (every ``import``, including those inside functions, since a
lazy import only hides a cycle until the function runs). Importing ``a.b.c`` runs ``a/__init__``
and ``a/b/__init__`` first, so an edge to a module is also an edge to the packages above it
(except those above the importing module itself, which are already running).
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "oteseq"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every ``oteseq...`` name an import statement of ``path`` reaches (modules, and
    ``module.attr`` for ``from module import attr``, which may be a submodule)."""
    name, is_package = module_name(path), path.name == "__init__.py"
    names = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # never executed: no edge
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] == "oteseq"}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in imported_names(path):
            parts = target.split(".")
            for k in range(2, len(parts) + 1):  # the target and the packages it runs first
                reached = ".".join(parts[:k])
                if reached in files and reached != name and not name.startswith(reached + "."):
                    edges.add(reached)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
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
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve():
    graph = import_graph()
    assert "oteseq.values.prompts" in graph["oteseq.values.optimise"]
    assert "oteseq.models" in graph["oteseq.values.optimise"]
    assert "oteseq.evaluate" in graph["oteseq.data._counterfact"] or \
        "oteseq.tfidf" in graph["oteseq.data._counterfact"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_imports_first():
    """Each module imported with no other oteseq module loaded (torch and transformers stay
    loaded between them, which keeps this to one interpreter)."""
    names = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if p.stem != "__main__")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'oteseq']:\n"
            "        del sys.modules[loaded]\n"
            "    importlib.import_module(name)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_submodule_shadows_a_public_name():
    """Import every submodule of oteseq, then read the public names of oteseq and of each
    subpackage: a function or class must still be one (``import oteseq.x.f`` binds the
    attribute ``f`` of ``oteseq.x`` to the module ``oteseq.x.f`` when that module exists), and
    ``import oteseq.x.f as m`` must give a module, never the function of the same name."""
    code = (
        "import importlib, pkgutil, sys, oteseq\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(oteseq.__path__, 'oteseq.')\n"
        "               if not m.name.endswith('__main__'))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "bad = []\n"
        "for pkg in [oteseq] + [sys.modules[n] for n in names if hasattr(sys.modules[n],"
        " '__path__')]:\n"
        "    for attr in getattr(pkg, '__all__', []):\n"
        "        value = getattr(pkg, attr)\n"
        "        submodule = sys.modules.get(f'{pkg.__name__}.{attr}')\n"
        "        if submodule is not None and value is not submodule:\n"
        "            bad.append(f'{pkg.__name__}.{attr}')\n"
        "for attr, (module, target) in oteseq._LAZY.items():\n"
        "    value = getattr(oteseq, attr)\n"
        "    if value is not (sys.modules[module] if target is None else\n"
        "                     getattr(sys.modules[module], target)) or target and not "
        "callable(value):\n"
        "        bad.append(f'oteseq.{attr}')\n"
        "assert oteseq.setup(0) == 'ci', 'oteseq.setup(0)'\n"
        "print(len(names), bad)\n")
    env = {"OTESEQ_SCALE": "ci", "PATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    count, bad = out.stdout.split(maxsplit=1)
    assert int(count) > 50 and bad.strip() == "[]", out.stdout
