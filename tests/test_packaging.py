"""What each audience installs: ComfyUI's installers read requirements.txt / [project].dependencies, which must hold
exactly what the nodes import (never torch/torchvision/torchaudio); the CLI, training and tests are extras.
The fresh-venv checks themselves (only torch + requirements.txt; the README's command 1) run in ``.ci/run``."""
from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
NEVER = {"torch", "torchvision", "torchaudio"}


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements_txt() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_and_project_dependencies_agree_and_never_name_torch():
    deps = PYPROJECT["project"]["dependencies"]
    assert sorted(requirements_txt()) == sorted(deps)
    assert not {requirement_name(d) for d in deps} & NEVER
    assert not any("comfyui-frontend-package" in d for d in deps)  # not imported by the nodes


def test_extras_by_audience():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"cli", "train", "dev"} <= set(extras)
    names = {k: {requirement_name(d) for d in v} for k, v in extras.items()}
    assert {"torch", "pillow", "tqdm"} <= names["cli"]
    assert "cfm-boost" in names["train"] and "cfm-boost" in names["dev"]  # train ⊇ cli + vae, dev ⊇ train
    assert {"pytest", "ruff"} <= names["dev"]


def test_the_readme_commands_install_the_extras_they_use():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install torch==2.13.0 -e ".[cli]" && .venv/bin/cfm-boost upscale' in readme
    assert 'pip install -q torch==2.13.0 -e ".[dev]" && .venv/bin/python -m pytest -q' in readme
    assert "not published yet" in readme  # the Manager/registry listing does not exist today
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-r requirements.txt" in ci and "check_comfy_install.py" in ci and '-e ".[cli]"' in ci


def test_the_registry_icon_exists_in_the_repository():
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    path = ROOT / icon.split("/main/", 1)[1]
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", icon


def test_the_nodes_import_exactly_the_declared_requirements(tmp_path):
    """Load the pack as ComfyUI does (stand-in ComfyUI) and run the bundled model; every third-party module it
    loaded belongs to torch, a declared requirement or one of their dependencies, and every requirement is used."""
    env = {**os.environ, "STUB_COMFY_BASE": str(tmp_path / "comfyui"), "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_comfy_install.py")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("third-party modules loaded: "))
    loaded = set(line.split(": ", 1)[1].split(", "))
    owners = metadata.packages_distributions()
    # (modules no distribution owns, such as Cython's ``cython_runtime``, are runtime artefacts, not packages)
    dists = {requirement_name(d) for m in loaded for d in owners.get(m, [])}
    declared = {requirement_name(d) for d in PYPROJECT["project"]["dependencies"]}
    allowed, todo = set(), ["torch", *declared]
    while todo:  # the declared packages, torch (ComfyUI's) and everything they depend on
        name = todo.pop()
        if name in allowed:
            continue
        allowed.add(name)
        try:
            todo += [requirement_name(r) for r in metadata.requires(name) or [] if "extra ==" not in r]
        except metadata.PackageNotFoundError:
            pass
    assert dists <= allowed, f"the nodes import undeclared packages: {sorted(dists - allowed)}"
    assert declared <= dists, f"declared but never imported by the nodes: {sorted(declared - dists)}"
    print(json.dumps(sorted(dists)))
