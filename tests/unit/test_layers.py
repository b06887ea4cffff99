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
    ("gateway.errors", "gateway.durations", "gateway.ids", "gateway.paths", "gateway.claims", "gateway.logs",
     "gateway.metrics", "gateway.http"),
    ("gateway.config",),  # gateway.yaml as typed, frozen objects
    ("gateway.stores", "gateway.client_ip", "gateway.ratelimit"),  # state, and who the client is
    ("gateway.auth", "gateway.proxy"),  # tokens, logins, sessions; the upstream side: transport, balancer, health
    # the request's way through the stages; what the gateway answers itself, on the public and the admin port
    ("gateway.pipeline", "gateway.endpoints", "gateway.admin"),
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
        modules = {c for c in candidates if c.split(".")[0] == "gateway" and _exists(c)}
        if len(modules) > 1:  # `from pkg import module`: the module is what is imported (its package runs first)
            modules.discard(candidates[0])
        found |= modules
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first: an edge to each package on the way,
    # but for the packages the importing module is in (they are running already).
    for target in list(found):
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(2, len(parts))}
    return {t for t in found if not (name == t or name.startswith(t + "."))}


def _exists(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def layer(name: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            covers = name == prefix or (prefix != "gateway" and name.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{name} has no layer: give it one in LAYERS"
    return best[0]


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
            for name, targets in sorted(edges.items()) for target in sorted(targets) if layer(target) > layer(name)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name, [name])
    return found


def test_every_module_has_a_layer() -> None:
    for name in graph():
        layer(name)


def test_every_import_points_down_or_across() -> None:
    assert upward(graph()) == []


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle() -> None:
    assert upward({"gateway.stores.codes": {"gateway.auth.tokens"}}) == [
        "gateway.stores.codes (layer 2) imports gateway.auth.tokens (layer 3)"]
    assert upward({"gateway.auth.tokens": {"gateway.stores.codes"}}) == []
    assert cycles({"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.c"}, "gateway.c": {"gateway.a"}}) == [
        ["gateway.a", "gateway.b", "gateway.c", "gateway.a"]]
    assert cycles({"gateway.a": {"gateway.b"}, "gateway.b": set()}) == []
    try:
        layer("gateway.newcomer")
    except AssertionError:
        pass
    else:
        raise AssertionError("a module with no layer was given one")


def test_imports_are_read_as_python_runs_them() -> None:
    edges = graph()
    assert "gateway.stores.codes" in edges["gateway.auth.login"]  # relative imports, resolved
    assert "gateway.server.listener" in edges["gateway.cli.main"]  # one inside a function
    assert "gateway.http.reply" in edges["gateway.http.protocol"]
    assert "gateway.pipeline" in edges["gateway.app"]  # the package that runs before pipeline.stages
    assert "gateway.stores" not in edges["gateway.stores.codes"]  # its own package is running already
