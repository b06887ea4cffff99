"""The package's imports point one way: down the layers, and never in a circle.

A module may import modules of its own layer or of a layer below. Every
import counts, also those under TYPE_CHECKING and inside functions. A new
module must be given its layer here (docs/ARCHITECTURE.md shows the same).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "gateway"

LAYERS: list[tuple[str, ...]] = [
    # values, and the HTTP server's own parts: no gateway policy
    ("gateway.errors", "gateway.durations", "gateway.ids", "gateway.paths", "gateway.claims", "gateway.http"),
    ("gateway.config",),  # gateway.yaml as typed, frozen objects
    ("gateway.stores", "gateway.client_ip", "gateway.ratelimit"),  # state, and who the client is
    ("gateway.auth", "gateway.proxy"),  # tokens, logins, sessions; the upstream side: transport, balancer, health
    ("gateway.pipeline", "gateway.endpoints"),  # the request's way through the stages; what the gateway answers
    ("gateway.app",),  # builds every stage and store, and hands them to each other
    ("gateway.server", "gateway.cli", "gateway.__main__", "gateway"),  # processes and commands
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The gateway modules `path` imports, by their full names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c.split(".")[0] == "gateway" and _exists(c)}
    return found - {name}


def _exists(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def layer(name: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{name} has no layer: give it one in LAYERS"
    return best[0]


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def test_every_import_points_down_or_across() -> None:
    upward = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
              for name, targets in graph().items() for target in sorted(targets) if layer(target) > layer(name)]
    assert upward == []


def test_no_module_imports_itself_through_others() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_the_check_sees_an_upward_import_and_a_cycle() -> None:
    """The walk itself: a store importing a stage would be caught, and so would a pair importing each other."""
    assert layer("gateway.stores.codes") < layer("gateway.auth.login") < layer("gateway.pipeline.stages")
    edges = graph()
    assert "gateway.stores.codes" in edges["gateway.auth.login"]  # imports are read, relative ones included
    assert "gateway.http.reply" in edges["gateway.http.protocol"]
    assert "gateway.server.listener" in edges["gateway.cli.main"]  # and those inside functions
