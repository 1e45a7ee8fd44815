"""The example workflows in the REAL ComfyUI frontend (headless Chromium): ``tests/browser/check_workflows.js``.

Skipped unless a server, Node.js, Chromium and playwright-core are all there:

    CFM_COMFY_URL=http://127.0.0.1:8188 CFM_PLAYWRIGHT_DIR=/path/to/node_modules \\
        .venv/bin/python -m pytest -m browser tests/test_browser.py

``CFM_CHROMIUM`` picks the browser (default ``/usr/bin/chromium``, else ``chromium`` on PATH);
``CFM_BROWSER_ARTIFACTS`` keeps the screenshots (one per workflow) and the JSON report in that folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "browser" / "check_workflows.js"
WORKFLOW_DIR = ROOT / "workflows"
URL = os.environ.get("CFM_COMFY_URL", "").rstrip("/")
PLAYWRIGHT_DIR = os.environ.get("CFM_PLAYWRIGHT_DIR", "")


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CFM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def playwright_found(node: str) -> bool:
    if PLAYWRIGHT_DIR:
        return (Path(PLAYWRIGHT_DIR) / "playwright-core" / "package.json").is_file()
    probe = subprocess.run([node, "-e", "require.resolve('playwright-core')"], capture_output=True, cwd=ROOT)
    return probe.returncode == 0


def missing_requirement() -> str | None:
    if not URL:
        return "set CFM_COMFY_URL to a running ComfyUI with this pack"
    node = shutil.which("node")
    if not node:
        return "Node.js (node) is not on PATH"
    if not find_chromium():
        return "no Chromium found (set CFM_CHROMIUM)"
    if not playwright_found(node):
        return "playwright-core not found (set CFM_PLAYWRIGHT_DIR to a node_modules folder that has it)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(missing_requirement()),
                                                      reason=missing_requirement() or "")]


@pytest.mark.timeout(600)
def test_every_workflow_loads_in_the_real_frontend_without_missing_nodes_or_errors(tmp_path):
    out = Path(os.environ.get("CFM_BROWSER_ARTIFACTS") or tmp_path)
    env = {**os.environ, "CFM_CHROMIUM": find_chromium()}
    proc = subprocess.run(["node", str(SCRIPT), "--url", URL, "--workflows", str(WORKFLOW_DIR), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=540)
    assert proc.returncode in (0, 1), f"the check itself failed:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    assert report["selfTest"]["detected"], "the check did not notice a missing node type: it cannot be trusted"
    assert not report["problems"], "\n".join(report["problems"])
    names = {p.stem for p in WORKFLOW_DIR.glob("*.json")}
    assert set(report["workflows"]) == names
    for name, entry in report["workflows"].items():
        assert Path(entry["screenshot"]).stat().st_size > 10_000, name
    print(f"frontend {report['frontend']}, pack folder {report['pack']!r}, screenshots in {out}")
