"""The package layout keeps development tools out of what production runs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adpipes"
# The one place dev mode is chosen (and only inside its ADPIPES_ENV=dev branch).
DEV_CHOOSER = PACKAGE / "definitions.py"


def dev_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "adpipes.dev" or name.startswith("adpipes.dev.")]
    return found


def test_no_production_module_imports_the_dev_package() -> None:
    production = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "dev") not in p.parents and p != DEV_CHOOSER]
    assert len(production) > 20  # the walk found the package
    offenders = {str(p.relative_to(PACKAGE)): dev_imports(p) for p in production if dev_imports(p)}
    assert offenders == {}


def test_definitions_imports_the_dev_package_only_in_its_dev_branch() -> None:
    tree = ast.parse(DEV_CHOOSER.read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any(dev_imports_of(n) for n in top_level)
    in_dev_branch = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "is_dev" in ast.unparse(n.test)
                     and any(dev_imports_of(m) for m in ast.walk(n))]
    assert in_dev_branch, "definitions.py should import adpipes.dev inside its settings.is_dev branch"


def dev_imports_of(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").startswith("adpipes.dev")
    if isinstance(node, ast.Import):
        return any(a.name.startswith("adpipes.dev") for a in node.names)
    return False
