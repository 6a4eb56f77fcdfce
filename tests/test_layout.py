"""The package's shape: what the root shows, and imports that point one way.

- The package root holds what users import; everything else is ``_``-named.
- Module-level imports form no cycle (imports under ``if TYPE_CHECKING:`` are types, not
  arrows at run time).
- Each part imports only the parts below it: adapters -> capture -> sender/delivery ->
  transport; models, errors and the option table are leaves.
- An import inside a function is allowed only where it delays an optional dependency
  (a framework, the collector's server), never to dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moesif_users_middleware"
NAME = PACKAGE.name

PUBLIC = {
    "__init__.py",
    "__main__.py",
    "aws_lambda.py",
    "backfill",
    "celery.py",
    "cli.py",
    "collector",
    "django",
    "errors.py",
    "flask.py",
    "models.py",
    "py.typed",
    "sender.py",
    "starlette.py",
    "testing",
    "transport.py",
    "wsgi.py",
}

# A part may import parts of a lower rank (or its own).
RANKS = {
    "errors": 0,
    "_time": 0,
    "_merge": 0,
    "_ratelimit": 0,
    "_sigterm": 0,
    "_json": 1,
    "_options": 1,
    "models": 2,
    "_transport": 3,
    "transport": 3,
    "_delivery": 4,
    "_lifecycle": 4,
    "sender": 5,
    "_capture": 6,
    "backfill": 7,
    "_spool_command": 7,
    "collector": 7,
    "django": 8,
    "flask": 8,
    "wsgi": 8,
    "starlette": 8,
    "_flask_login": 8,
    "aws_lambda": 8,
    "celery": 8,
    "testing": 8,
    "cli": 9,
    "__main__": 9,
    "_demo": 9,
    "": 9,  # the package's __init__
}

# (importing module, imported module): imports inside functions that delay an optional
# dependency or a heavy subcommand.
LAZY = {
    ("cli", "_demo.run"),  # the demo needs every framework
    ("cli", "backfill.arguments"),  # the send command and its readers
    ("cli", "backfill.command"),
    ("cli", "_spool_command"),  # the spool command (it loads the sender)
    ("cli", "collector"),  # needs starlette and uvicorn
    ("_demo.run", "_demo.flask_app"),  # needs flask
    ("_demo.run", "collector"),
    ("_demo.run", "collector.server_thread"),
    ("wsgi", "_capture.wsgi_request"),  # needs werkzeug
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def part(module: str) -> str:
    return module.split(".")[0]


def imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions) of package modules."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    inner: set[str] = set()
    package = path.name == "__init__.py"
    typing_only = {
        id(child)
        for statement in tree.body
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test)
        for child in ast.walk(statement)
    }  # imports for annotations: not arrows at run time
    for node in ast.walk(tree):
        targets = _targets(module, package, node)
        if targets and id(node) not in typing_only:
            (top if _module_level(tree, node) else inner).update(targets)
    return top, inner


def _targets(module: str, package: bool, node: ast.AST) -> set[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if module else []
            base = base if package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = (node.module or "").removeprefix(NAME).removeprefix(".")
            if not (node.module or "").startswith(NAME):
                return set()
        names = {f"{target}.{a.name}".strip(".") for a in node.names}
        return {n for n in names if n in MODULES} or ({target} if target in MODULES else set())
    if isinstance(node, ast.Import):
        return {
            a.name.removeprefix(NAME + ".") for a in node.names if a.name.startswith(NAME + ".")
        }
    return set()


def _module_level(tree: ast.Module, node: ast.AST) -> bool:
    for statement in tree.body:
        if statement is node:
            return True
        if isinstance(statement, ast.Try) and any(child is node for child in ast.walk(statement)):
            return True
    return False


GRAPH = {module: imports(module, path) for module, path in MODULES.items()}


def test_the_root_shows_only_what_users_import() -> None:
    shown = {
        p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")) or p.name in PUBLIC
    }
    shown -= {"__pycache__"}
    assert shown == PUBLIC


def test_module_level_imports_form_no_cycle() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module][0]):
            if target == module or target not in GRAPH:
                continue
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_each_part_imports_only_the_parts_below_it() -> None:
    wrong = [
        (module, target)
        for module, (top, inner) in GRAPH.items()
        for target in top | inner
        if RANKS[part(target)] > RANKS[part(module)]
    ]
    assert wrong == []


def test_imports_inside_functions_only_delay_optional_dependencies() -> None:
    inner = {(module, target) for module, (_, lazy) in GRAPH.items() for target in lazy}
    assert inner <= LAZY, sorted(inner - LAZY)


def test_every_part_has_a_rank() -> None:
    assert {part(module) for module in MODULES} <= set(RANKS)
