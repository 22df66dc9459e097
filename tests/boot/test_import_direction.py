"""The rooms import one way (pyproject's import-linter contracts) and no module imports itself back through others."""

from __future__ import annotations

import subprocess

import grimp

from tests.processes import BIN_DIR, PROJECT_DIR

PACKAGES = ("boot", "common", "portal")


def import_cycles() -> list[list[str]]:
    """Every group of our modules that import each other in a circle (function-level imports included)."""
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    imports = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules) for m in modules}
    # Tarjan's strongly connected components, iteratively (no recursion limit on a deep graph).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(imports[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
                        cycles.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(imports[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_no_module_of_ours_imports_itself_back():
    assert import_cycles() == []


def test_the_one_way_contracts_hold():
    result = subprocess.run(
        [str(BIN_DIR / "lint-imports"), "--no-cache"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_app_importing_boot_breaks_the_contract(tmp_path):
    # The contract can fail: a copy of the tree where one service imports boot is refused.
    tree = tmp_path
    subprocess.run(["cp", "-r", *(str(PROJECT_DIR / p) for p in (*PACKAGES, "pyproject.toml")), str(tree)], check=True)
    target = tree / "common" / "outbox" / "services" / "signing.py"
    target.write_text(target.read_text() + "\nimport boot.settings  # noqa\n")
    result = subprocess.run([str(BIN_DIR / "lint-imports"), "--no-cache"], cwd=tree, capture_output=True, text=True)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
