"""One layering, enforced: the import-linter contract in setup.cfg (errors and registry at the bottom, then the
utilities, the components, the config, the stages, the pipeline and the command line on top), and no import
circle anywhere in the package, function-local imports included (grimp sees those too)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

grimp = pytest.importorskip("grimp")
pytest.importorskip("importlinter")


def test_the_layers_contract_is_kept():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()", "setup.cfg", "--no-cache"],
                            capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def import_circles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
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
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
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
                    circles.append(sorted(component))
    return circles


def test_no_import_circle():
    code = ("import grimp, json; g = grimp.build_graph('bfcnn', cache_dir=None); "
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    import json

    edges = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                                      env=env, check=True).stdout)

    class Graph:
        modules = set(edges)

        @staticmethod
        def find_modules_directly_imported_by(module):
            return edges[module]

    assert import_circles(Graph) == []


def test_the_circle_finder_finds_circles():
    class Graph:
        modules = {"a", "b", "c", "d"}

        @staticmethod
        def find_modules_directly_imported_by(module):
            return {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}[module]

    assert import_circles(Graph) == [["a", "b", "c"]]
