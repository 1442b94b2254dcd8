"""The package's layers, read from its imports: the engine sits below the HTTP layer.

``gateway/`` (the engine) imports no HTTP code of ours (``proxy/``, ``keys/``, ``routes.py``,
``middleware.py``, ``router.py``, ``asgi.py``) and neither starlette nor pydantic; and no module
of the package takes part in an import circle at run time. For the layers, imports inside
``if TYPE_CHECKING:`` count too (they are still a dependency of the reader); for circles they do
not, since they never execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "byok_middleware"
ENGINE_FORBIDDEN = (
    "byok_middleware.proxy",
    "byok_middleware.keys",
    "byok_middleware.routes",
    "byok_middleware.router",
    "byok_middleware.middleware",
    "byok_middleware.asgi",
    "byok_middleware.identity",
    "starlette",
    "pydantic",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    return skipped


def _imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every module ``path`` imports, absolute; ``from x import y`` names both x and x.y."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree) if runtime_only else set()
    package = (
        _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {
            imported
            for imported in _imports(path, runtime_only=True)
            if imported in modules and imported != name
        }
        for name, path in modules.items()
    }


def test_the_engine_imports_no_http_layer() -> None:
    """No gateway/ module imports proxy/, keys/, the router, ASGI helpers, starlette, pydantic."""
    offences = [
        f"{_module_name(path)} imports {imported}"
        for path in sorted((PACKAGE / "gateway").rglob("*.py"))
        for imported in sorted(_imports(path))
        if imported.startswith(ENGINE_FORBIDDEN)
    ]
    assert offences == []


def test_no_import_circles() -> None:
    """The package's module import graph has no cycle (a package importing its own submodules
    through ``__init__`` re-exports is an edge like any other)."""
    graph = _graph()
    # Re-exports: a package's __init__ importing its children is not a circle with them.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not t.startswith(name + ".")}
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        visiting.add(node)
        for target in sorted(graph[node]):
            if target in visiting:
                cycles.append(
                    [*path[path.index(target) :], target] if target in path else [node, target]
                )
            elif target not in done:
                visit(target, [*path, target])
        visiting.discard(node)
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []
