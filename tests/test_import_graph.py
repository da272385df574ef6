"""No import cycles among pymeta's modules: every `import` / `from ... import` (at module level and
inside functions) is read with ast, and a cycle fails the test naming its modules in order. Imports under
`if TYPE_CHECKING:` never run (they name types for annotations and mypy) and are left out."""

import ast
import os

import pymeta

ROOT = os.path.dirname(os.path.abspath(pymeta.__file__))


def modules():
    """{module name: path} of every module of the pymeta package."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, name), os.path.dirname(ROOT))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = os.path.join(folder, name)
    return found


def imports(module, path, known):
    """The pymeta modules `module` imports (anywhere in its file)."""
    is_package = path.endswith("__init__.py")
    out = set()
    tree = ast.parse(open(path).read(), path)
    annotation_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                       for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in known:  # a submodule
                    out.add(f"{target}.{a.name}")
                elif target in known:
                    out.add(target)
    out.discard(module)
    return out


def _is_type_checking_block(node):
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:`."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def find_cycle(graph):
    """One import cycle of `graph` ({module: imported modules}) as a list [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one_and_names_it():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    f = tmp_path / "pkg" / "x.py"
    f.write_text("def f():\n    from pymeta.checkpoint import kept_inner_state\n    from . import y\n")
    assert imports("pymeta.x", str(f), {"pymeta.checkpoint", "pymeta.y", "pymeta.x"}) == {"pymeta.checkpoint",
                                                                                          "pymeta.y"}


def test_no_import_cycles_in_pymeta():
    known = modules()
    graph = {m: imports(m, path, known) for m, path in known.items()}
    assert "pymeta.checkpoint" in graph["pymeta.model_io"]  # the graph is not empty
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_annotation_only_imports_are_left_out(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from typing import TYPE_CHECKING\nimport pymeta.a\nif TYPE_CHECKING:\n    import pymeta.b\n")
    assert imports("pymeta.x", str(f), {"pymeta.a", "pymeta.b", "pymeta.x"}) == {"pymeta.a"}
