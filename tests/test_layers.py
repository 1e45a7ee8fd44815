"""The import rules between the parts of the pack (see "Architecture" in docs/DEVELOPING.md).

* The **engine** (the library modules at the top level of ``cfm_core``) never imports the command layer
  (train, evaluate, bench*, cli*, the other ``python -m cfm_core`` commands, ``__main__``), the ComfyUI nodes or
  ComfyUI itself. Module-level and function-level imports count alike, and so do ``importlib.import_module`` /
  ``__import__`` calls with a literal name and the lazy exports of ``cfm_core/__init__.py``.
* Nothing in ``cfm_core`` imports ComfyUI (``comfy``, ``folder_paths``, ``latent_preview``…) or the pack's nodes.
* ``nodes/`` never reaches training, evaluation or the benchmarks, directly or through another cfm_core module.

Every module of ``cfm_core`` must be listed below as engine or command, so a new module is classified on purpose.
The rules are checked on the source (``ast``), nothing is imported. ``CFM_LAYERS_ROOT=<a copy of the pack>``
checks another tree (how the failure message was demonstrated without editing the repository).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("CFM_LAYERS_ROOT") or Path(__file__).resolve().parent.parent)

# The engine: what the CLI and the nodes both run on. data/ema (training inputs and weight averaging) and
# metrics/degrade (evaluation) are libraries too: they follow the engine's rules.
ENGINE = frozenset({
    "__init__", "augment", "autoencoders", "bundled", "checkpoint", "data", "degrade", "devices", "ema", "errors",
    "images", "metrics", "model", "path", "pipeline", "solvers", "tiling", "unet", "upsample", "vae_families",
})
# The command layer: ``python -m cfm_core COMMAND`` (``__main__``) and the modules behind its commands.
COMMANDS = frozenset({
    "__main__", "bench", "bench_common", "bench_fig5", "bench_flops", "bench_memory", "bench_models",
    "bench_precision", "bench_psu", "bench_report", "bench_sections", "bench_solvers", "bench_timing", "bench_train",
    "cli_upscale", "convert", "evaluate", "export", "info", "train",
})
COMMAND_PREFIXES = ("cfm_core.train", "cfm_core.evaluate", "cfm_core.bench", "cfm_core.cli", "cfm_core.__main__",
                    "cfm_core.convert", "cfm_core.export", "cfm_core.info")
COMFYUI = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "latent_preview", "server", "execution")
PACK_NODES = ("nodes",)  # the pack's node package (and ComfyUI's own ``nodes`` module)
NODES_MAY_NOT_REACH = ("cfm_core.train", "cfm_core.evaluate", "cfm_core.bench")


def matches(module: str, prefixes: tuple[str, ...]) -> bool:
    """``module`` is one of ``prefixes`` or inside it; a prefix ending in a letter also matches longer names
    (``cfm_core.bench`` covers ``cfm_core.bench_solvers``, ``cfm_core.cli`` covers ``cfm_core.cli_upscale``)."""
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return True
        if prefix.startswith("cfm_core.") and module.startswith(prefix) and module[len(prefix)] == "_":
            return True
    return False


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


def violations(source: str, module: str, forbidden: tuple[str, ...], path: str = "<source>",
               is_package: bool = False) -> list[str]:
    """One ``path:line: module imports X (forbidden: ...)`` message per forbidden import in ``source``."""
    out, reported = [], set()
    for line, name in imports_of(source, module, is_package):
        if matches(name, forbidden) and (line, name.rpartition(".")[0]) not in reported:  # not a.b after a
            reported.add((line, name))
            out.append(f"{path}:{line}: {module} imports {name} (forbidden here: {', '.join(forbidden)})")
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
    names = {p.stem for p in (ROOT / "cfm_core").glob("*.py")}
    packages = {p.name for p in (ROOT / "cfm_core").iterdir() if (p / "__init__.py").is_file()}
    assert not ENGINE & COMMANDS
    assert names | packages == ENGINE | COMMANDS, (
        f"unclassified: {sorted((names | packages) - ENGINE - COMMANDS)}; gone: {sorted(ENGINE | COMMANDS - names)}"
        " — add new modules to ENGINE or COMMANDS in tests/test_layers.py (and to docs/DEVELOPING.md)")


def test_engine_never_imports_commands_nodes_or_comfyui():
    problems = []
    for path in python_files(ROOT / "cfm_core"):
        module, is_package = module_name(path, ROOT)
        if path.relative_to(ROOT / "cfm_core").parts[0].removesuffix(".py") not in ENGINE:
            continue
        problems += violations(read(path), module, COMMAND_PREFIXES + PACK_NODES + COMFYUI,
                               str(path.relative_to(ROOT)), is_package)
    assert not problems, "the engine imports what it must not:\n" + "\n".join(problems)


def test_nothing_in_cfm_core_imports_comfyui_or_nodes():
    problems = []
    for path in python_files(ROOT / "cfm_core"):
        module, is_package = module_name(path, ROOT)
        problems += violations(read(path), module, PACK_NODES + COMFYUI, str(path.relative_to(ROOT)), is_package)
    assert not problems, "cfm_core imports ComfyUI or the nodes:\n" + "\n".join(problems)


def _cfm_core_graph() -> dict[str, set[str]]:
    """cfm_core module → the cfm_core modules it imports (any import, anywhere in the module)."""
    files = {module_name(p, ROOT)[0]: p for p in python_files(ROOT / "cfm_core")}
    graph = {}
    for module, path in files.items():
        imported = {name for _, name in imports_of(read(path), module, path.name == "__init__.py")}
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def test_nodes_never_reach_training_evaluation_or_benchmarks():
    graph = _cfm_core_graph()
    problems = []
    for path in python_files(ROOT / "nodes"):
        module, is_package = module_name(path, ROOT)
        where = str(path.relative_to(ROOT))
        problems += violations(read(path), module, NODES_MAY_NOT_REACH, where, is_package)
        for line, name in imports_of(read(path), module, is_package):  # and not through another cfm_core module
            seen, todo = set(), [[name]] if name in graph and not matches(name, NODES_MAY_NOT_REACH) else []
            while todo:
                chain = todo.pop(0)  # breadth first: the shortest chain is reported
                if chain[-1] in seen:
                    continue
                seen.add(chain[-1])
                if matches(chain[-1], NODES_MAY_NOT_REACH):
                    problems.append(f"{where}:{line}: {module} imports {' → '.join(chain)} "
                                    f"(forbidden here: {', '.join(NODES_MAY_NOT_REACH)})")
                    break
                todo += [[*chain, nxt] for nxt in sorted(graph[chain[-1]])]
    assert not problems, "the nodes reach training/evaluation/benchmarks:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------ the checker itself

ENGINE_FORBIDDEN = COMMAND_PREFIXES + PACK_NODES + COMFYUI


@pytest.mark.parametrize("source, imported, line", [
    ("from .train import run\n", "cfm_core.train", 1),
    ("import torch\n\ndef f():\n    from . import evaluate\n", "cfm_core.evaluate", 4),
    ("from .bench_solvers import resolve_model\n", "cfm_core.bench_solvers", 1),
    ("import cfm_core.cli_upscale\n", "cfm_core.cli_upscale", 1),
    ("from cfm_core import train\n", "cfm_core.train", 1),
    ("from .. import nodes\n", "nodes", 1),
    ("def f():\n    import comfy.model_management as mm\n", "comfy.model_management", 2),
    ("import folder_paths\n", "folder_paths", 1),
    ("import importlib\nm = importlib.import_module('.bench', 'cfm_core')\n", "cfm_core.bench", 2),
    ("from . import __main__\n", "cfm_core.__main__", 1),
])
def test_checker_finds_a_forbidden_import(source, imported, line):
    found = violations(source, "cfm_core.pipeline", ENGINE_FORBIDDEN, "cfm_core/pipeline.py")
    assert found, f"no violation found in {source!r}"
    assert f"cfm_core/pipeline.py:{line}: cfm_core.pipeline imports {imported} (forbidden here: " in "\n".join(found)


@pytest.mark.parametrize("source", [
    "from .errors import CFMError\n",
    "from .pipeline import boost\nimport torch\n",
    "from cfm_core.autoencoders import LatentSpec\n",
    "import trainer_utils\nfrom .benchmarks_are_not_here import x\n",  # names that only start like a rule
    "from .information import x\n",
])
def test_checker_accepts_allowed_imports(source):
    assert violations(source, "cfm_core.pipeline", ENGINE_FORBIDDEN) == []


def test_checker_finds_lazy_exports_of_a_package():
    source = "_EXPORTS = {\n    'pipeline': ('boost',),\n    'train': ('fit',),\n}\n"
    assert violations(source, "cfm_core", ENGINE_FORBIDDEN, "cfm_core/__init__.py", is_package=True) == [
        f"cfm_core/__init__.py:3: cfm_core imports cfm_core.train (forbidden here: {', '.join(ENGINE_FORBIDDEN)})"]


def test_checker_resolves_node_imports():
    source = "from cfm_core.pipeline import boost\nfrom cfm_core.bench_common import Section\nfrom .common import X\n"
    found = violations(source, "nodes.solve", NODES_MAY_NOT_REACH, "nodes/solve.py")
    assert [m.split(" (")[0] for m in found] == ["nodes/solve.py:2: nodes.solve imports cfm_core.bench_common"]
