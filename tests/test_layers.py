"""The import rules between the parts of the pack (see "Architecture" in docs/DEVELOPING.md).

``cfm_core`` is the **engine** (its top-level modules) and four sub-packages on top of it:

    engine     cfm_core/*.py           imports the engine only
    train      cfm_core/train/         the engine and itself
    evaluate   cfm_core/evaluate/      the engine, itself and cfm_core.train.degrade (inputs degraded as in training)
    bench      cfm_core/bench/         the engine and itself
    cli        cfm_core/cli/ (+ __main__.py, the ``python -m cfm_core`` entry)   every part of cfm_core

Nothing in ``cfm_core`` imports ComfyUI (``comfy``, ``folder_paths``, ``latent_preview``…) or the pack's nodes, and
``nodes/`` imports only the engine from ``cfm_core`` (never train, evaluate, bench or cli), not even through another
cfm_core module. Module-level and function-level imports count alike, and so do ``importlib.import_module`` /
``__import__`` calls with a literal name and the lazy exports of a package's ``__init__.py``. Every top-level module
of ``cfm_core`` must be listed in ENGINE and every sub-package in MAY_IMPORT, so a new one is classified on purpose.

The rules are checked on the source (``ast``), nothing is imported. ``CFM_LAYERS_ROOT=<a copy of the pack>``
checks another tree (how the failure message is demonstrated without editing the repository).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("CFM_LAYERS_ROOT") or Path(__file__).resolve().parent.parent)

# The engine: what the CLI and the nodes both run on, the top-level modules of cfm_core.
ENGINE = frozenset({
    "__init__", "augment", "autoencoders", "bundled", "checkpoint", "contrast", "devices", "errors", "images", "model",
    "path", "pipeline", "solvers", "tiling", "unet", "upsample", "vae_families",
})
ENTRY = {"__main__": "cli"}  # top-level modules that belong to a sub-package's part
# part → what it may import from cfm_core besides itself: parts, or dotted modules (with what is inside them)
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "engine": (),
    "train": ("engine",),
    "evaluate": ("engine", "cfm_core.train.degrade"),
    "bench": ("engine",),
    "cli": ("engine", "train", "evaluate", "bench"),
}
NODES_MAY_IMPORT = ("engine",)
COMFYUI = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "latent_preview", "server", "execution")
PACK_NODES = ("nodes",)  # the pack's node package (and ComfyUI's own ``nodes`` module)
SUBPACKAGES = frozenset(MAY_IMPORT) - {"engine"}


def part_of(module: str) -> str | None:
    """The part of a cfm_core module (or of a name inside one): ``cfm_core.bench.timing`` → bench,
    ``cfm_core.pipeline`` / ``cfm_core.CFMError`` / ``cfm_core`` → engine; None outside cfm_core."""
    parts = module.split(".")
    if parts[0] != "cfm_core":
        return None
    if len(parts) == 1:
        return "engine"
    return parts[1] if parts[1] in SUBPACKAGES else ENTRY.get(parts[1], "engine")


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside it (``comfy`` covers ``comfy.sd``, not ``comfyish``)."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def allowed(name: str, part: str, may_import: tuple[str, ...]) -> bool:
    """May a module of ``part`` import ``name``? Outside cfm_core always (ComfyUI and nodes are checked apart)."""
    target = part_of(name)
    if target is None or target == part:
        return True
    return target in may_import or within(name, tuple(m for m in may_import if "." in m))


def _resolve(name: str | None, level: int, package: str) -> str:
    if not level:
        return name or ""
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, name] if name else base)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones resolved against ``module``.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule); literal ``importlib.import_module``
    and ``__import__`` calls count; in a package ``__init__`` the keys of an ``_EXPORTS`` dict (lazy exports) do.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, package)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names
                      if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                name = node.args[0].value
                level = len(name) - len(name.lstrip("."))
                found.append((node.lineno, _resolve(name.lstrip(".") or None, level, package) if level else name))
        elif is_package and isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) \
                and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            found += [(key.lineno, f"{module}.{key.value}") for key in node.value.keys
                      if isinstance(key, ast.Constant) and isinstance(key.value, str)]
    return found


def violations(source: str, module: str, part: str, may_import: tuple[str, ...], path: str = "<source>",
               is_package: bool = False) -> list[str]:
    """One ``path:line: module imports X (part may import: ...)`` message per import of ``source`` that leaves
    what ``part`` may import, or reaches ComfyUI or the nodes from cfm_core."""
    out, reported = [], set()
    in_cfm_core = part_of(module) is not None
    for line, name in imports_of(source, module, is_package):
        outside = in_cfm_core and within(name, PACK_NODES + COMFYUI)
        if (outside or not allowed(name, part, may_import)) and (line, name.rpartition(".")[0]) not in reported:
            reported.add((line, name))  # not a.b after a
            rule = "nothing of ComfyUI or the nodes" if outside else ", ".join(may_import) or "itself only"
            out.append(f"{path}:{line}: {module} imports {name} ({part} may import: {rule})")
    return out


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ the repository

def test_every_cfm_core_module_is_classified():
    top = {p.stem for p in (ROOT / "cfm_core").glob("*.py")}
    packages = {p.name for p in (ROOT / "cfm_core").iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert top == ENGINE | set(ENTRY), (
        f"unclassified: {sorted(top - ENGINE - set(ENTRY))}; gone: {sorted((ENGINE | set(ENTRY)) - top)} — put a new "
        "module in its part's sub-package, or add an engine module to ENGINE in tests/test_layers.py (and to "
        "docs/DEVELOPING.md)")
    assert packages == SUBPACKAGES, f"sub-packages {sorted(packages)} ≠ the parts {sorted(SUBPACKAGES)}"
    assert all((ROOT / "cfm_core" / p / "__init__.py").is_file() for p in packages)


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_each_part_imports_only_what_it_may(part):
    problems = []
    for path in python_files(ROOT / "cfm_core"):
        module, is_package = module_name(path, ROOT)
        if part_of(module) == part:
            problems += violations(read(path), module, part, MAY_IMPORT[part], str(path.relative_to(ROOT)),
                                   is_package)
    assert not problems, f"the {part} imports what it must not:\n" + "\n".join(problems)


def _cfm_core_graph() -> dict[str, set[str]]:
    """cfm_core module → the cfm_core modules it imports (any import, anywhere in the module)."""
    files = {module_name(p, ROOT)[0]: p for p in python_files(ROOT / "cfm_core")}
    graph = {}
    for module, path in files.items():
        imported = {name for _, name in imports_of(read(path), module, path.name == "__init__.py")}
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def test_nodes_import_only_the_engine():
    graph = _cfm_core_graph()
    problems = []
    for path in python_files(ROOT / "nodes"):
        module, is_package = module_name(path, ROOT)
        where = str(path.relative_to(ROOT))
        problems += violations(read(path), module, "nodes", NODES_MAY_IMPORT, where, is_package)
        for line, name in imports_of(read(path), module, is_package):  # and not through another cfm_core module
            seen, todo = set(), [[name]] if name in graph and allowed(name, "nodes", NODES_MAY_IMPORT) else []
            while todo:
                chain = todo.pop(0)  # breadth first: the shortest chain is reported
                if chain[-1] in seen:
                    continue
                seen.add(chain[-1])
                if not allowed(chain[-1], "nodes", NODES_MAY_IMPORT):
                    problems.append(f"{where}:{line}: {module} imports {' → '.join(chain)} "
                                    f"(nodes may import: {', '.join(NODES_MAY_IMPORT)})")
                    break
                todo += [[*chain, nxt] for nxt in sorted(graph[chain[-1]])]
    assert not problems, "the nodes reach beyond the engine:\n" + "\n".join(problems)


def test_no_import_loop_between_modules():
    """No module imports (directly or through others) one that imports it back, lazy imports included; the lazy
    exports of ``cfm_core/__init__.py`` are not an import of the modules they name and are left out."""
    graph = _cfm_core_graph()
    graph["cfm_core"] = set()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (loop := visit(nxt, [*path, nxt])):
                return loop
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (loop := visit(module, [module])):
            pytest.fail("import loop: " + " → ".join(loop))


# ------------------------------------------------------------------------------------------ the checker itself

@pytest.mark.parametrize("module, part, source, imported, line", [
    ("cfm_core.pipeline", "engine", "from .train.train import run\n", "cfm_core.train.train", 1),
    ("cfm_core.pipeline", "engine", "import torch\n\ndef f():\n    from . import evaluate\n", "cfm_core.evaluate", 4),
    ("cfm_core.pipeline", "engine", "from .bench.models import resolve_model\n", "cfm_core.bench.models", 1),
    ("cfm_core.pipeline", "engine", "import cfm_core.cli.upscale\n", "cfm_core.cli.upscale", 1),
    ("cfm_core.pipeline", "engine", "from cfm_core import train\n", "cfm_core.train", 1),
    ("cfm_core.pipeline", "engine", "from .. import nodes\n", "nodes", 1),
    ("cfm_core.pipeline", "engine", "def f():\n    import comfy.model_management as mm\n",
     "comfy.model_management", 2),
    ("cfm_core.pipeline", "engine", "import folder_paths\n", "folder_paths", 1),
    ("cfm_core.pipeline", "engine", "import importlib\nm = importlib.import_module('.bench', 'cfm_core')\n",
     "cfm_core.bench", 2),
    ("cfm_core.pipeline", "engine", "from . import __main__\n", "cfm_core.__main__", 1),
    ("cfm_core.bench.memory", "bench", "from ..train.data import PairSource\n", "cfm_core.train.data", 1),
    ("cfm_core.bench.memory", "bench", "from ..evaluate.metrics import psnr\n", "cfm_core.evaluate.metrics", 1),
    ("cfm_core.train.train", "train", "from ..evaluate import metrics\n", "cfm_core.evaluate", 1),
    ("cfm_core.train.train", "train", "from ..cli.upscale import check_arguments\n", "cfm_core.cli.upscale", 1),
    ("cfm_core.evaluate.evaluate", "evaluate", "from ..train.train import export_model\n", "cfm_core.train.train",
     1),
    ("cfm_core.evaluate.evaluate", "evaluate", "from ..bench.timing import ratio\n", "cfm_core.bench.timing", 1),
    ("cfm_core.cli.upscale", "cli", "import comfy.sd\n", "comfy.sd", 1),
    ("nodes.solve", "nodes", "from cfm_core.cli.upscale import auto_tile\n", "cfm_core.cli.upscale", 1),
    ("nodes.solve", "nodes", "from cfm_core.train import degrade\n", "cfm_core.train", 1),
])
def test_checker_finds_a_forbidden_import(module, part, source, imported, line):
    where = module.replace(".", "/") + ".py"
    found = violations(source, module, part, MAY_IMPORT.get(part, NODES_MAY_IMPORT), where)
    assert found, f"no violation found in {source!r}"
    assert f"{where}:{line}: {module} imports {imported} ({part} may import: " in "\n".join(found)


@pytest.mark.parametrize("module, part, source", [
    ("cfm_core.pipeline", "engine", "from .errors import CFMError\n"),
    ("cfm_core.pipeline", "engine", "from .pipeline import boost\nimport torch\n"),
    ("cfm_core.pipeline", "engine", "from cfm_core.autoencoders import LatentSpec\n"),
    ("cfm_core.pipeline", "engine", "import trainer_utils\nfrom .benchmarks_are_not_here import x\n"),
    ("cfm_core.pipeline", "engine", "from .information import x\n"),
    ("cfm_core.bench.common", "bench", "from . import timing as bench_timing\nfrom ..checkpoint import atomic_write\n"),
    ("cfm_core.evaluate.evaluate", "evaluate", "from ..train.degrade import Degradation\nfrom .metrics import psnr\n"),
    ("cfm_core.cli.main", "cli", "from ..train.train import run\nfrom ..bench.bench import run\n"),
    ("nodes.solve", "nodes", "from cfm_core import CFMError\nfrom cfm_core.pipeline import boost\nimport comfy.sd\n"),
])
def test_checker_accepts_allowed_imports(module, part, source):
    assert violations(source, module, part, MAY_IMPORT.get(part, NODES_MAY_IMPORT)) == []


def test_checker_finds_lazy_exports_of_a_package():
    source = "_EXPORTS = {\n    'pipeline': ('boost',),\n    'train': ('fit',),\n}\n"
    assert violations(source, "cfm_core", "engine", (), "cfm_core/__init__.py", is_package=True) == [
        "cfm_core/__init__.py:3: cfm_core imports cfm_core.train (engine may import: itself only)"]


def test_checker_resolves_node_imports():
    source = "from cfm_core.pipeline import boost\nfrom cfm_core.bench.common import Section\nfrom .common import X\n"
    found = violations(source, "nodes.solve", "nodes", NODES_MAY_IMPORT, "nodes/solve.py")
    assert [m.split(" (")[0] for m in found] == ["nodes/solve.py:2: nodes.solve imports cfm_core.bench.common"]


def test_parts_of_modules():
    assert [part_of(m) for m in ("cfm_core", "cfm_core.CFMError", "cfm_core.pipeline.boost", "cfm_core.bench",
                                 "cfm_core.bench.timing", "cfm_core.train.degrade", "cfm_core.__main__", "torch",
                                 "nodes.solve")] == [
        "engine", "engine", "engine", "bench", "bench", "train", "cli", None, None]
