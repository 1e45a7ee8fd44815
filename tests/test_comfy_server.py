"""Acceptance against a REAL running ComfyUI with this pack loaded (skipped unless ``CFM_COMFY_URL`` is set).

    CFM_COMFY_URL=http://127.0.0.1:8188 .venv/bin/python -m pytest -m comfy_server tests/test_comfy_server.py

The server needs (names overridable by env):
* ``CFM_TEST_CHECKPOINT`` (default ``sd15_random.safetensors``): an SD1.5 checkpoint in models/checkpoints;
* ``CFM_TEST_CFM_MODEL`` (``cfm-sd15-2x.safetensors``): a CFM model in models/cfm for THAT checkpoint's VAE;
* ``CFM_TEST_OTHER_VAE_CFM_MODEL`` (``cfm-sd15-othervae-2x.safetensors``): one for a different SD VAE;
* ``CFM_TEST_PIXEL_MODEL`` (``(bundled) cfm-pixel-2x``): a pixel-space model (the bundled one by default).
``scripts/make_sd15_test_cfm.py`` makes the two latent models with the pack's trainer in under a minute.
Optional: ``CFM_COMFY_LOG`` = the server's log file (checked for IMPORT FAILED), ``CFM_COMFY_TIMEOUT`` (s).

Every example workflow's API twin runs with sizes shrunk so that it finishes in minutes on a CPU (base 64–128 px,
one KSampler step, two ODE steps, small tiles); the LCM LoRA is bypassed the way the frontend's Bypass does it.
Then: Cancel in the middle of an ODE, bad inputs (each must fail with a one-line message and leave the server
serving), and what the server tells the frontend (templates, node definitions with tooltips).
"""
from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "workflows"
API_DIR = WORKFLOW_DIR / "api"
URL = os.environ.get("CFM_COMFY_URL", "").rstrip("/")
CHECKPOINT = os.environ.get("CFM_TEST_CHECKPOINT", "sd15_random.safetensors")
CFM_MODEL = os.environ.get("CFM_TEST_CFM_MODEL", "cfm-sd15-2x.safetensors")
OTHER_VAE_MODEL = os.environ.get("CFM_TEST_OTHER_VAE_CFM_MODEL", "cfm-sd15-othervae-2x.safetensors")
PIXEL_MODEL = os.environ.get("CFM_TEST_PIXEL_MODEL", "(bundled) cfm-pixel-2x")
TIMEOUT = float(os.environ.get("CFM_COMFY_TIMEOUT", "900"))
SAMPLE_IMAGE = ROOT / "assets" / "coffee.png"  # 300×200
PACK_NODES = {"CFMLoader", "PixelSpaceUpsample", "NoiseAugment", "CFMUpscaleLatent", "CFMBoost", "CFMUpscaleImage"}
EXAMPLE_CFM_MODEL = "cfm-sd15-2x.safetensors"  # what the example workflows name
BUNDLED = "(bundled) cfm-pixel-2x"

pytestmark = [pytest.mark.comfy_server,
              pytest.mark.skipif(not URL, reason="set CFM_COMFY_URL to a running ComfyUI with this pack")]


# ------------------------------------------------------------------------------------------ HTTP client

def request(path: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    """(status, body bytes); HTTP errors are answers too."""
    req = urllib.request.Request(URL + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 (a local test server)
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(path: str):
    status, body = request(path)
    assert status == 200, f"GET {path}: {status} {body[:300]!r}"
    return json.loads(body)


def post_json(path: str, payload) -> tuple[int, dict]:
    status, body = request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    return status, (json.loads(body) if body.strip() else {})


def upload_image(path: Path) -> str:
    boundary = "----cfmtest" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
             (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
              "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + b"\r\n",
             f"--{boundary}--\r\n".encode()]
    status, body = request("/upload/image", b"".join(parts),
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, body[:300]
    answer = json.loads(body)
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


@dataclass
class Run:
    prompt_id: str
    status: str  # success | error
    messages: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    seconds: float = 0.0

    def message(self, kind: str) -> dict | None:
        return next((data for name, data in self.messages if name == kind), None)

    def explain(self) -> str:
        error = self.message("execution_error")
        if error:
            return f"{error.get('node_type')}: {error.get('exception_message')}\n{''.join(error.get('traceback', []))}"
        return f"status {self.status}, messages {[m[0] for m in self.messages]}"


def queue(prompt: dict, client_id: str | None = None) -> str:
    status, answer = post_json("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
    assert status == 200, f"/prompt refused the workflow: {json.dumps(answer)[:2000]}"
    assert not answer.get("node_errors"), answer
    return answer["prompt_id"]


def wait(prompt_id: str, timeout: float = TIMEOUT, started: float | None = None) -> Run:
    started = started or time.monotonic()
    while time.monotonic() - started < timeout:
        history = get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
            return Run(prompt_id, entry["status"]["status_str"], entry["status"].get("messages", []),
                       entry.get("outputs", {}), time.monotonic() - started)
        time.sleep(0.5)
    post_json("/interrupt", {})
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def run(prompt: dict, timeout: float = TIMEOUT) -> Run:
    started = time.monotonic()
    return wait(queue(prompt), timeout, started)


def output_files(result: Run, kind: str = "images") -> list[dict]:
    return [f for out in result.outputs.values() for f in out.get(kind, [])]


def png_size(entry: dict) -> tuple[int, int]:
    query = urllib.parse.urlencode({k: entry[k] for k in ("filename", "subfolder", "type")})
    status, body = request(f"/view?{query}")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", (status, body[:16])
    return struct.unpack(">II", body[16:24])  # IHDR width, height


# ------------------------------------------------------------------------------------------ websocket (stdlib)

class WebSocket:
    """Just enough of RFC 6455 to read ComfyUI's JSON status messages (server frames are unmasked)."""

    def __init__(self, client_id: str):
        parts = urllib.parse.urlsplit(URL)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def next_frame(self) -> tuple[str, dict | bytes]:
        """("json", message) for a text frame, ("binary", payload) for a binary one (previews)."""
        while True:
            b0, b1 = self._read(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(length)
            if b0 & 0x0F == 1:
                return "json", json.loads(payload)
            if b0 & 0x0F == 2:
                return "binary", payload
            if b0 & 0x0F == 8:
                raise ConnectionError("websocket closed by the server")

    def next_json(self) -> dict:
        while True:
            kind, message = self.next_frame()
            if kind == "json":  # binary frames are previews
                return message

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------------------------------ fixtures and graphs

@pytest.fixture(scope="module")
def object_info() -> dict:
    """The server's node definitions; it has the pack, an SD1.5 checkpoint and the pixel (bundled) model."""
    info = get_json("/object_info")
    missing = PACK_NODES - set(info)
    assert not missing, f"the pack's nodes {sorted(missing)} are not loaded: look for IMPORT FAILED in the log"
    models = info["CFMLoader"]["input"]["required"]["model_name"][0]
    checkpoints = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    needed = [m for m in (PIXEL_MODEL,) if m not in models] + ([CHECKPOINT] if CHECKPOINT not in checkpoints else [])
    assert not needed, f"the server lacks {needed}; point CFM_TEST_CHECKPOINT / CFM_TEST_PIXEL_MODEL at files it has"
    return info


@pytest.fixture(scope="module")
def trained_models(object_info) -> dict:
    """The latent CFM models the needs_training_ templates and the VAE checks use (made by the pack's trainer)."""
    models = object_info["CFMLoader"]["input"]["required"]["model_name"][0]
    needed = [m for m in (CFM_MODEL, OTHER_VAE_MODEL) if m not in models]
    assert not needed, (f"the server lacks {needed}: run scripts/make_sd15_test_cfm.py (see this file's docstring) "
                        "or point the CFM_TEST_* variables at files it has")
    return object_info


def previews_enabled_on_server() -> bool:
    """Whether the server was started with previews on (``--preview-method`` other than none, ComfyUI's default)."""
    argv = get_json("/system_stats")["system"]["argv"]
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--preview-method=") else (
            argv[i + 1] if arg == "--preview-method" and i + 1 < len(argv) else None)
        if value is not None:
            return value != "none"
    return False


@pytest.fixture(scope="module")
def sample_image(object_info) -> str:
    return upload_image(SAMPLE_IMAGE)


@pytest.fixture(scope="module")
def small_image(object_info, tmp_path_factory) -> str:
    """coffee.png at 96×64, so that the 4× template finishes in seconds on a CPU."""
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "coffee_96x64.png"
    with Image.open(SAMPLE_IMAGE) as image:
        image.convert("RGB").resize((96, 64), Image.Resampling.BICUBIC).save(path)
    return upload_image(path)


def example(name: str) -> dict:
    return json.loads((API_DIR / f"{name}_api.json").read_text(encoding="utf-8"))


def bypass(prompt: dict, node_id: str, info: dict) -> None:
    """Remove a node and connect each consumer of its output to the node's input of the same type (= Bypass)."""
    node = prompt.pop(node_id)
    output_types = info[node["class_type"]]["output"]
    for other in prompt.values():
        for name, value in other["inputs"].items():
            if isinstance(value, list) and value[0] == node_id:
                wanted = output_types[value[1]]
                source = next(v for v in node["inputs"].values() if isinstance(v, list)
                              and info[prompt[v[0]]["class_type"]]["output"][v[1]] == wanted)
                other["inputs"][name] = list(source)


def shrink(prompt: dict, info: dict, base_px: int, image: str | None = None) -> dict:
    """The same graph at test size, on the test server's model files."""
    prompt = copy.deepcopy(prompt)
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoraLoaderModelOnly":
            bypass(prompt, node_id, info)
        elif kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = CHECKPOINT
        elif kind == "CFMLoader":
            inputs["model_name"] = {EXAMPLE_CFM_MODEL: CFM_MODEL, BUNDLED: PIXEL_MODEL}[inputs["model_name"]]
        elif kind == "EmptyLatentImage":
            inputs.update(width=base_px, height=base_px)
        elif kind == "KSampler":
            inputs["steps"] = 1
        elif kind in ("CFMBoost", "CFMUpscaleLatent", "CFMUpscaleImage"):
            inputs["steps"] = 2
            if inputs.get("tile"):
                inputs["tile"] = 64  # still tiled (e.g. 3×3 tiles of the 128² model latent of a 256² image)
            if "vae_tile_size" in inputs:
                inputs["vae_tile_size"] = 128
        elif kind == "VAEDecodeTiled":
            inputs.update(tile_size=128, overlap=32)
        elif kind == "LoadImage":
            inputs["image"] = image
        elif kind == "SaveImage":
            inputs["filename_prefix"] = "cfm-boost-test/" + inputs["filename_prefix"].rsplit("/", 1)[-1]
    return prompt


def latent_probe(latent_node: dict, model: str = CFM_MODEL, seed: int | None = None, node: str = "CFMUpscaleLatent",
                 extra: dict | None = None) -> dict:
    """latent source → CFMLoader → <node> (2 steps) → SaveLatent."""
    inputs = {"cfm_model": ["2", 0], "samples": ["1", 0], "solver": "euler", "steps": 2,
              "seed": random.randrange(2**32) if seed is None else seed, "noise_step": -1, "tile": 0, "overlap": 8}
    prompt = {"1": latent_node,
              "2": {"class_type": "CFMLoader", "inputs": {"model_name": model, "dtype": "auto"}},
              "3": {"class_type": node, "inputs": inputs},
              "4": {"class_type": "SaveLatent",
                    "inputs": {"samples": ["3", 0], "filename_prefix": "cfm-boost-test/probe"}}}
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            prompt[key] = value
        else:
            inputs[key] = value
    return prompt


def empty_latent(px: int) -> dict:
    return {"class_type": "EmptyLatentImage", "inputs": {"width": px, "height": px, "batch_size": 1}}


def assert_still_serving() -> None:
    """GET /object_info answers and a good (fresh-seeded, so not cached) CFM prompt succeeds."""
    assert "CFMBoost" in get_json("/object_info/CFMBoost")
    result = run(latent_probe(empty_latent(128)), timeout=300)
    assert result.status == "success", result.explain()
    assert output_files(result, "latents")


def assert_one_line_error(result: Run, node_type: str, *words: str) -> str:
    assert result.status == "error", f"expected an error, got {result.status}"
    error = result.message("execution_error")
    assert error, result.messages
    message = error["exception_message"].strip()
    assert error["node_type"] == node_type, error
    assert "\n" not in message and len(message) < 400, f"not one short line: {message!r}"
    assert "CFMError" in error["exception_type"], error["exception_type"]
    for word in words:
        assert re.search(word, message, re.IGNORECASE), f"{word!r} not in {message!r}"
    print(f"{node_type}: {message}")
    return message


# ------------------------------------------------------------------------------------------ the example workflows

WORKFLOW_CASES = {  # name: (base px, expected output size); the needs_training_ ones need a trained latent model
    "sd15_txt2img_cfm_1024": (128, (256, 256)),
    "sd15_hires_fix_cfm": (128, (256, 256)),
    "cascade_2048": (64, (256, 256)),
    "image_upscale_4x": (None, (384, 256)),  # from the 96×64 small_image
    "needs_training_sd15_txt2img_1024": (128, (256, 256)),
    "needs_training_fast_base_lcm": (128, (256, 256)),
}


def test_every_template_has_a_case():
    assert set(WORKFLOW_CASES) == {p.stem for p in WORKFLOW_DIR.glob("*.json")}


@pytest.mark.timeout(TIMEOUT + 120)
@pytest.mark.parametrize("name", sorted(WORKFLOW_CASES))
def test_example_workflow_runs(name, object_info, small_image, request):
    """Every API twin at test size; the shipped templates on the server's checkpoint and the bundled model only."""
    base_px, expected_size = WORKFLOW_CASES[name]
    if name.startswith("needs_training_"):
        request.getfixturevalue("trained_models")
    prompt = shrink(example(name), object_info, base_px, image=small_image)
    cfm_models = {n["inputs"]["model_name"] for n in prompt.values() if n["class_type"] == "CFMLoader"}
    assert name.startswith("needs_training_") or cfm_models == {PIXEL_MODEL}, cfm_models
    result = run(prompt)
    assert result.status == "success", result.explain()
    images = output_files(result)
    assert len(images) == 1 and images[0]["type"] == "output"
    assert png_size(images[0]) == expected_size
    print(f"{name}: {result.seconds:.1f} s, {images[0]['filename']}")


@pytest.mark.timeout(TIMEOUT)
def test_step_by_step_graph_runs_with_the_bundled_model(object_info):
    """KSampler-free: latent → PixelSpaceUpsample (factor from the bundled model) → CFMUpscaleLatent (its VAE input
    connected: decode → pixel CFM → encode) → VAE Decode; a NoiseAugment output is refused in one line."""
    ckpt = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}}
    psu = {"class_type": "PixelSpaceUpsample", "inputs": {"samples": ["1", 0], "vae": ["5", 2], "scale_by": 0.0,
                                                          "resize_method": "bilinear", "vae_tiling": "auto",
                                                          "vae_tile_size": 512, "cfm_model": ["2", 0]}}
    prompt = latent_probe(empty_latent(64), model=PIXEL_MODEL, extra={
        "5": ckpt, "6": psu, "samples": ["6", 0], "vae": ["5", 2],
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["5", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "cfm-boost-test/steps"}}})
    result = run(prompt)
    assert result.status == "success", result.explain()
    assert png_size(output_files(result)[0]) == (128, 128)
    noised = copy.deepcopy(prompt)
    noised["9"] = {"class_type": "NoiseAugment", "inputs": {"samples": ["6", 0], "noise_step": 100, "seed": 1,
                                                            "scale_factor": 0.18215, "shift_factor": 0.0}}
    noised["3"]["inputs"]["samples"] = ["9", 0]
    assert_one_line_error(run(noised), "CFMUpscaleLatent", "NoiseAugment", "PixelSpaceUpsample")
    print(f"step by step with the bundled model: {result.seconds:.1f} s")


# ------------------------------------------------------------------------------------------ previews

def run_collecting_previews(prompt: dict, node_id: str) -> tuple[Run, list[bytes], int]:
    """Queue ``prompt`` on a websocket of our own; (result, preview images sent while ``node_id`` ran, its steps)."""
    client_id = uuid.uuid4().hex
    ws = WebSocket(client_id)
    previews, steps, running = [], 0, None
    try:
        prompt_id = queue(prompt, client_id)
        while True:
            kind, message = ws.next_frame()
            if kind == "binary":
                event, image_type = struct.unpack(">II", message[:8])
                if running == node_id and event == 1:  # PREVIEW_IMAGE: 4-byte event, 4-byte format, the image
                    assert image_type in (1, 2)  # JPEG or PNG
                    previews.append(message[8:])
                continue
            data = message.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "executing":
                running = data.get("node")
                if running is None:
                    break
            elif message["type"] == "progress" and data.get("node") == node_id:
                steps = max(steps, data["value"])
            elif message["type"] in ("execution_error", "execution_interrupted"):
                break
    finally:
        ws.close()
    return wait(prompt_id, timeout=60), previews, steps


def preview_cases() -> dict:
    return {"pixel model (bundled), as an image": lambda image: (image_upscale_prompt(image, PIXEL_MODEL, "euler", 4,
                                                                                      "preview"), "3"),
            "latent model, through Latent2RGB": lambda image: (latent_probe(empty_latent(128), extra={"steps": 4}),
                                                               "3")}


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("case", sorted(preview_cases()))
def test_previews_arrive_during_the_solve_exactly_when_previews_are_on(case, object_info, small_image, request):
    """Run once against a server started with ``--preview-method auto`` and once with the default (none)."""
    if case.startswith("latent"):
        request.getfixturevalue("trained_models")
    from io import BytesIO

    from PIL import Image

    prompt, node_id = preview_cases()[case](small_image)
    result, previews, steps = run_collecting_previews(prompt, node_id)
    assert result.status == "success", result.explain()
    assert steps == 4
    enabled = previews_enabled_on_server()
    if not enabled:
        assert previews == [], "previews were sent although the server has previews off"
    else:
        assert len(previews) == steps, f"{len(previews)} previews for {steps} ODE steps"
        for payload in previews:
            with Image.open(BytesIO(payload)) as image:
                assert image.format in ("JPEG", "PNG") and min(image.size) >= 8
        distinct = len(set(previews))
        if case.startswith("pixel"):  # the trained bundled model moves; the barely trained test latent model may not
            assert distinct > 1, "the preview does not change during the solve"
    print(f"{case}: previews {'on' if enabled else 'off'}, {len(previews)} preview images for {steps} steps")


def image_upscale_prompt(image: str, model_name: str, solver: str, steps: int, prefix: str) -> dict:
    """LoadImage → CFMLoader → CFMUpscaleImage → SaveImage, in API format."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "CFMLoader", "inputs": {"model_name": model_name, "dtype": "auto"}},
            "3": {"class_type": "CFMUpscaleImage",
                  "inputs": {"image": ["1", 0], "cfm_model": ["2", 0], "solver": solver, "steps": steps,
                             "seed": random.randrange(2**32), "noise_step": -1, "tile": 0, "overlap": 8}},
            "4": {"class_type": "SaveImage",
                  "inputs": {"images": ["3", 0], "filename_prefix": f"cfm-boost-test/{prefix}"}}}


# ------------------------------------------------------------------------------------------ cancel

@pytest.mark.timeout(TIMEOUT + 120)
def test_interrupt_in_the_middle_of_the_ode_stops_it_and_the_next_prompt_runs(object_info, sample_image):
    client_id = uuid.uuid4().hex
    prompt = image_upscale_prompt(sample_image, PIXEL_MODEL, "rk4", 1000, "x")
    ws = WebSocket(client_id)
    try:
        started = time.monotonic()
        prompt_id = queue(prompt, client_id)
        while True:  # wait until the ODE has taken a few steps
            message = ws.next_json()
            data = message.get("data", {})
            if message.get("type") == "execution_error" and data.get("prompt_id") == prompt_id:
                pytest.fail(f"the run failed before it could be interrupted: {data.get('exception_message')}")
            if (message.get("type") == "progress" and data.get("prompt_id") == prompt_id
                    and data.get("node") == "3" and data.get("value", 0) >= 2):
                step, total = data["value"], data["max"]
                break
        interrupted_at = time.monotonic()
        assert post_json("/interrupt", {})[0] == 200
        result = wait(prompt_id, timeout=120, started=interrupted_at)
    finally:
        ws.close()
    stopped_after = time.monotonic() - interrupted_at
    assert step < total == 1000
    assert result.status == "error"
    interrupted = result.message("execution_interrupted")
    assert interrupted and interrupted["node_type"] == "CFMUpscaleImage", result.messages
    assert not output_files(result)
    print(f"interrupted at ODE step {step}/{total} after {interrupted_at - started:.1f} s; "
          f"stopped {stopped_after:.1f} s after POST /interrupt")
    assert stopped_after < 60  # one rk4 step of a tiny model is far less; generous for a loaded CPU
    assert_still_serving()


# ------------------------------------------------------------------------------------------ bad inputs

@pytest.mark.timeout(600)
def test_16_channel_latent_into_a_4_channel_model(trained_models):
    sd3 = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}}
    assert_one_line_error(run(latent_probe(sd3)), "CFMUpscaleLatent", "16", "4", "channel")
    assert_still_serving()


@pytest.mark.timeout(600)
def test_cfm_model_for_another_vae(trained_models):
    prompt = latent_probe(empty_latent(128), model=OTHER_VAE_MODEL, node="CFMBoost", extra={
        "5": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "vae": ["5", 2], "resize_method": "bilinear", "vae_tiling": "auto", "vae_tile_size": 512})
    assert_one_line_error(run(prompt), "CFMBoost", "VAE")
    assert_still_serving()


@pytest.mark.timeout(600)
def test_latent_too_small(trained_models):
    assert_one_line_error(run(latent_probe(empty_latent(32))), "CFMUpscaleLatent", "4×4", "8×8")
    assert_still_serving()


@pytest.mark.timeout(600)
def test_missing_model_file_is_refused_before_running(object_info):
    prompt = latent_probe(empty_latent(128), model="cfm-no-such-file.safetensors")
    status, answer = post_json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 400, answer
    errors = answer["node_errors"]["2"]["errors"]
    assert errors[0]["details"].startswith("model_name: 'cfm-no-such-file.safetensors' not in"), errors
    assert "\n" not in errors[0]["message"], errors
    print(f"CFMLoader (HTTP 400): {errors[0]['message']}: {errors[0]['details'][:120]}")
    assert_still_serving()


@pytest.mark.timeout(600)
def test_bundled_entry_runs_or_says_in_one_line_that_the_file_is_missing(object_info, sample_image):
    prompt = image_upscale_prompt(sample_image, BUNDLED, "euler", 1, "b")
    result = run(prompt)
    if result.status == "success":
        assert png_size(output_files(result)[0]) == (600, 400)
    else:  # a development checkout without the trained bundled file
        assert_one_line_error(result, "CFMLoader", "bundled model", "missing", "models/cfm")
    assert_still_serving()


# ------------------------------------------------------------------------------------------ what the frontend sees

def test_workflow_templates_lists_and_serves_the_examples(object_info):
    templates = get_json("/workflow_templates")
    names = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
    pack = next((k for k, v in templates.items() if set(names) <= set(v)), None)
    assert pack, f"/workflow_templates does not list {names}: {templates}"
    assert not [n for n in templates[pack] if n.endswith("_api")], "API twins must not show up as templates"
    for name in names:
        status, body = request(f"/api/workflow_templates/{urllib.parse.quote(pack)}/{name}.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOW_DIR / f"{name}.json").read_text()), name
        status, body = request(f"/api/workflow_templates/{urllib.parse.quote(pack)}/{name}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", f"thumbnail {name}.jpg: {status}"


def test_object_info_has_the_six_nodes_with_tooltips(object_info):
    for node_id in sorted(PACK_NODES):
        node = object_info[node_id]
        assert node["category"] == "CFM Boost" and len(node["description"]) > 40, node_id
        assert node["python_module"].startswith("custom_nodes."), node["python_module"]  # ours, not a core clash
        for section in ("required", "optional"):
            for name, (_kind, *options) in node["input"].get(section, {}).items():
                assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(node["output_tooltips"]) == len(node["output"]) and all(node["output_tooltips"]), node_id


def test_server_log_has_no_import_failure_for_the_pack():
    log = os.environ.get("CFM_COMFY_LOG")
    if not log:
        pytest.skip("set CFM_COMFY_LOG to the server's log file")
    text = Path(log).read_text(errors="replace")
    loaded = [Path(m) for m in re.findall(r"seconds(?: \(IMPORT FAILED\))?: (\S+)\s*$", text, re.MULTILINE)]
    ours = [line for line in text.splitlines() if "seconds" in line and any(
        str(p) in line for p in loaded if p.exists() and p.resolve() == ROOT.resolve())]
    assert ours, "the pack is not in the import table"  # (mounted under any folder name, e.g. a symlink)
    assert not [line for line in ours if "IMPORT FAILED" in line], ours
