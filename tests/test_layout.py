"""The folder tree is the architecture: packages in layers, each importing only its own layer or
those below it, with no import circles; reading a config file imports no implementation."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamer"

# Bottom to top. A module may import its own package, anything in a lower layer, and nothing above.
LAYERS = [
    {"errors", "assets"},
    {"metrics", "concurrency"},
    {"config"},
    {"model"},
    {"auto"},
    {"sources"},
    {"outputs"},
    {"video"},
    {"live"},
    {"serve", "cluster"},
    {"app", "offline", "cli", "doctor", "export", "__main__", "__init__"},
]


def _room(module: str) -> str:
    """``streamer.live.stream`` -> ``live``; ``streamer`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _level(module: str) -> int:
    room = _room(module)
    return next(i for i, layer in enumerate(LAYERS) if room in layer)


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (at any depth in its code)."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in modules}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found |= {n for n in names if n in modules}
        graph[name] = found - {name}
    return graph


def test_every_room_is_in_a_layer() -> None:
    rooms = {_room(m) for m in _imports()}
    placed = set().union(*LAYERS)
    assert rooms <= placed, f"modules in no layer: {rooms - placed} (add them to LAYERS where they belong)"


def test_nothing_imports_upward() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if _level(target) > _level(module)
    ]
    assert not upward, upward


def test_no_import_circles() -> None:
    graph = _imports()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if target == module.rsplit(".", 1)[0] or module == target.rsplit(".", 1)[0]:
                continue  # a package and its own modules (its __init__ re-exporting them)
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, circles


def test_reading_a_config_imports_no_implementation() -> None:
    """Loading YAML needs PyYAML, not the MQTT client, the websocket server, the model or the codecs."""
    heavy = ("paho", "websockets", "pycocotools", "aiortc", "av", "torch", "sam2")
    code = f"import sys, streamer.config as c; c.load_config('small'); print(sorted(set({heavy}) & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr
