"""The layout rules of docs/layout.md, checked on the source: the core library never imports the paper pipelines,
no two modules import each other, the recipes stay short scripts and no library module outgrows one reading."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distil_trainers"
PIPELINES = PACKAGE / "papers"
RECIPE_MAX_LINES = 150
MODULE_MAX_LINES = 800


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (a file under ``root``), relative imports resolved
    (any nesting level)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(root).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def core_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if PIPELINES not in p.parents]


def test_the_resolver_sees_relative_imports_of_the_pipelines():
    # a check that cannot fail would prove nothing: a relative import of the pipelines must be seen
    pipeline = PIPELINES / "workflow.py"
    assert any(name.startswith("distil_trainers.trainers") for _, name in imported_modules(pipeline))


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_the_paper_pipelines(path):
    bad = [f"line {line}: {name}" for line, name in imported_modules(path)
           if name == "distil_trainers.papers" or name.startswith("distil_trainers.papers.")]
    assert not bad, f"{path.relative_to(ROOT)} imports the paper pipelines ({'; '.join(bad)}): see docs/layout.md"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.py")), ids=lambda p: p.name)
def test_recipes_are_short_scripts(path):
    lines = len(path.read_text().splitlines())
    assert lines <= RECIPE_MAX_LINES, (
        f"recipes/{path.name} has {lines} lines (at most {RECIPE_MAX_LINES}): a recipe is one method, parse -> "
        "model -> data -> trainer -> train -> save/push; multi-stage comparisons go to distil_trainers/papers/"
    )


def test_library_modules_are_split_by_concern_before_they_outgrow_one_reading():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MODULE_MAX_LINES}
    assert not long, (
        f"library modules over {MODULE_MAX_LINES} lines: {long}. Split one by concern into a package whose __init__ "
        "re-exports its names (as distil_trainers.losses and distil_trainers.teachers.cache are)"
    )


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if path.name == "__init__.py" else parts)


def import_cycles(files: list[Path], root: Path = ROOT) -> list[list[str]]:
    """The groups of modules among ``files`` that reach each other through their imports (at any depth, imports
    inside functions included); a package's ``__init__`` re-exporting its modules is left out."""
    modules = {module_name(p, root): p for p in files}
    graph = {}
    for name, path in modules.items():
        targets = set()
        if path.name != "__init__.py":
            for _, target in imported_modules(path, root):
                while target and target not in modules:  # `from a.b import f` -> a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reached = {name: reach(name) for name in graph}
    groups = {frozenset(n for n in reached[name] if name in reached[n]) | {name} for name in graph if name in reached[name]}
    return sorted(sorted(group) for group in groups)


def test_the_cycle_finder_sees_modules_that_import_each_other(tmp_path):
    package = tmp_path / "distil_trainers"
    files = {"a.py": "def f():\n    from distil_trainers.b import g\n", "b.py": "from distil_trainers import c\n",
             "c.py": "from .a import f\n", "d.py": "import distil_trainers.a\n"}  # fmt: skip
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    # a -> b (inside a function) -> c -> a (relative) is one cycle; d only imports a
    assert import_cycles(sorted(package.glob("*.py")), root=tmp_path) == [
        ["distil_trainers.a", "distil_trainers.b", "distil_trainers.c"]]


def test_no_two_modules_import_each_other():
    cycles = import_cycles(sorted(PACKAGE.rglob("*.py")))
    assert not cycles, f"modules that import each other (move what they share into a module of their own): {cycles}"
