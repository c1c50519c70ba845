"""The layout rules of docs/layout.md, checked on the source: the core library never imports the paper pipelines,
and the recipes stay short scripts."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distil_trainers"
PIPELINES = PACKAGE / "papers"
RECIPE_MAX_LINES = 150


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved (any nesting level)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
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


def test_the_resolver_sees_relative_imports_of_the_pipelines(tmp_path):
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
