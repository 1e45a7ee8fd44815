"""Write the example workflows in ``workflows/``: the UI format (what ComfyUI's template browser loads) and its
API-format twin in ``workflows/api/`` (what ``POST /prompt`` runs), from one description of each graph.

Each graph below names its nodes, links and widget values once; the two formats are derived from it with the
node definitions ComfyUI serves at ``/object_info``: the core nodes' from ``tests/data/core_object_info.json``
(a trimmed copy of ComfyUI a125cd8's), this pack's from its own classes (imported against the comfy stand-in in
``tests/comfy_stub``). The UI format follows what the 1.27.10 frontend writes when it saves a workflow: link
inputs first, then one input per widget; ``widgets_values`` in widget order, with the extra
``control_after_generate`` value after each seed (always ``"fixed"`` here, so the examples reproduce) and the
``upload`` value after LoadImage's image. ``tests/test_workflows.py`` checks the files against the same
definitions; ``tests/browser/check_workflows.js`` loads them in the real frontend.

usage (repository root):
    .venv/bin/python scripts/make_workflows.py                    # (re)write workflows/*.json and workflows/api/
    .venv/bin/python scripts/make_workflows.py --refresh-core-info <object_info.json saved from a ComfyUI server>
        # or a server URL (http://127.0.0.1:8188): refresh tests/data/core_object_info.json for the core node types
    .venv/bin/python scripts/make_workflows.py --thumbnails-from DIR
        # also write workflows/<name>.jpg (the template browser's thumbnails) from the screenshots DIR/<name>.png
        # that tests/browser/check_workflows.js --out DIR takes of each loaded workflow
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
CORE_INFO = ROOT / "tests" / "data" / "core_object_info.json"
FRONTEND_VERSION = "1.27.10"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only: one text widget, never in the API format
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}
GROUP_COLOR = "#3f789e"
BASE_GROUP = (380, -30, 805, 600)  # x, y, width, height of the "base image" group around sd15_base()
PACK_NODE_TYPES = {"CFMLoader", "PixelSpaceUpsample", "NoiseAugment", "CFMUpscaleLatent", "CFMBoost", "CFMUpscaleImage"}

SD15_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CFM_SD15 = "cfm-sd15-2x.safetensors"
BUNDLED = "(bundled) cfm-pixel-2x"
LCM_LORA = "lcm_lora_sd15.safetensors"
# What the frontend's missing-models dialog reads: node ``properties.models`` entries (name, url, directory) whose
# name is one of the node's widget values (frontend 1.27.10, src/utils/modelMetadataUtil.ts + scripts/app.ts).
# Its schema requires a URL; downloads are offered only from huggingface.co/civitai.com, other URLs are listed
# with their address. The bundled model has no entry: it ships with the pack and is always listed.
SD15_CHECKPOINT_FILE = {"name": SD15_CHECKPOINT, "directory": "checkpoints",
                        "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                               "v1-5-pruned-emaonly-fp16.safetensors"}
LCM_LORA_FILE = {"name": LCM_LORA, "directory": "loras",
                 "url": "https://huggingface.co/latent-consistency/lcm-lora-sdv1-5/resolve/main/"
                        "pytorch_lora_weights.safetensors"}
CFM_SD15_FILE = {"name": CFM_SD15, "directory": "cfm",  # no download exists: the link says how to train it
                 "url": "https://github.com/cfm-boost/cfm-boost/blob/main/workflows/README.md#the-cfm-model-for-sd15"}
POSITIVE = ("a photograph of an espresso cup on a wooden cafe table, latte art, soft window light, shallow depth "
            "of field, highly detailed")
NEGATIVE = "blurry, lowres, jpeg artifacts, watermark, text"
TRAIN_HINT = ("No official weights exist yet: train one with the pack's trainer, e.g. `python -m cfm_core train "
              "--data <images> --space vae --vae <sd15-vae>.safetensors --vae-name sd15 --preset small --export "
              "ComfyUI/models/cfm/cfm-sd15-2x.safetensors` (see the pack README).")


# ------------------------------------------------------------------------------------------ graph description

@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    values: dict[str, Any] = field(default_factory=dict)  # widget values by input name (API-format values)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input name -> (source node id, output slot)
    title: str | None = None
    size: tuple[int, int] | None = None
    models: list[str] = field(default_factory=list)  # model files this node expects (API twin's _meta)
    files: list[dict] = field(default_factory=list)  # the same for the frontend: properties.models entries


@dataclass
class Group:
    title: str
    bounding: tuple[int, int, int, int]


@dataclass
class Workflow:
    name: str
    description: str
    models: list[str]
    nodes: list[Node]
    groups: list[Group] = field(default_factory=list)
    view: tuple[float, int, int] = (0.7, 20, 60)  # scale, offset x, offset y of the canvas when loaded


def note(node_id: int, pos: tuple[int, int], size: tuple[int, int], text: str) -> Node:
    return Node(node_id, "MarkdownNote", pos, {"text": text}, size=size, title="About this workflow")


def models_markdown(models: list[str]) -> str:
    return "\n".join(f"- `{m}`" for m in models)


def sd15_base(first_id: int, steps: int, cfg: float, sampler: str, scheduler: str, model_from: tuple[int, int],
              seed: int, width: int = 512, height: int = 512, x: int = 400) -> list[Node]:
    """CLIPTextEncode ×2 + EmptyLatentImage + KSampler, given node 1 = CheckpointLoaderSimple."""
    i = first_id
    return [
        Node(i, "CLIPTextEncode", (x, 40), {"text": POSITIVE}, {"clip": (1, 1)}, title="Positive prompt",
             size=(400, 150)),
        Node(i + 1, "CLIPTextEncode", (x, 240), {"text": NEGATIVE}, {"clip": (1, 1)}, title="Negative prompt",
             size=(400, 150)),
        Node(i + 2, "EmptyLatentImage", (x, 440), {"width": width, "height": height, "batch_size": 1},
             size=(315, 106)),
        Node(i + 3, "KSampler", (x + 440, 40),
             {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
              "denoise": 1.0},
             {"model": model_from, "positive": (i, 0), "negative": (i + 1, 0), "latent_image": (i + 2, 0)},
             size=(315, 262)),
    ]


def checkpoint_loader(pos=(20, 40)) -> Node:
    return Node(1, "CheckpointLoaderSimple", pos, {"ckpt_name": SD15_CHECKPOINT}, size=(330, 98),
                models=[f"models/checkpoints/{SD15_CHECKPOINT} (any SD1.5 checkpoint)"], files=[SD15_CHECKPOINT_FILE])


def cfm_loader(node_id: int, pos: tuple[int, int], model: str = BUNDLED) -> Node:
    if model == BUNDLED:
        return Node(node_id, "CFMLoader", pos, {"model_name": model, "dtype": "auto"}, size=(330, 102),
                    models=["bundled with the pack (no download)"])
    return Node(node_id, "CFMLoader", pos, {"model_name": model, "dtype": "auto"}, size=(330, 102),
                models=[f"models/cfm/{model} (train it: see workflows/README.md)"], files=[CFM_SD15_FILE])


BOOST_DEFAULTS = {"solver": "default", "steps": 0, "seed": 0, "noise_step": -1, "resize_method": "bilinear",
                  "tile": 0, "overlap": 8, "vae_tiling": "auto", "vae_tile_size": 512}
BUNDLED_COST = ("The bundled model works on pixels, so CFM Boost decodes the latent with the checkpoint's VAE, "
                "upscales the image and encodes it again (any SD1.5 VAE works). It is a small demonstration model "
                "(+2 dB over bicubic on photos); a latent model trained for your VAE (see the `needs_training_` "
                "templates) skips the VAE round trip.")


def bundled_models() -> list[str]:
    return [f"models/checkpoints/{SD15_CHECKPOINT} — any SD1.5 checkpoint (choose yours in Load Checkpoint)",
            "(bundled) cfm-pixel-2x — ships with the pack, nothing to download"]


def sd15_txt2img_cfm_1024() -> Workflow:
    models = bundled_models()
    text = f"""## SD1.5 txt2img → CFM Boost → 1024²

Runs as shipped: any SD1.5 checkpoint plus the CFM model bundled with the pack. KSampler makes a 512² latent;
**CFM Boost** upscales it 2× (noise augmentation and a few ODE steps of the Coupling Flow Matching model); VAE
Decode shows the 1024² image.

**Model files**
{models_markdown(models)}

{BUNDLED_COST}

Solver/steps `default`/`0` use the model's own settings. With previews on (ComfyUI's `--preview-method auto`) the
node shows its current estimate at every ODE step."""
    nodes = [
        checkpoint_loader(),
        *sd15_base(2, steps=20, cfg=7.0, sampler="dpmpp_2m", scheduler="karras", model_from=(1, 0), seed=42),
        cfm_loader(6, (1230, 400)),
        Node(7, "CFMBoost", (1230, 40), dict(BOOST_DEFAULTS),
             {"samples": (5, 0), "vae": (1, 2), "cfm_model": (6, 0)}, size=(315, 314)),
        Node(8, "VAEDecode", (1610, 40), links={"samples": (7, 0), "vae": (1, 2)}, size=(210, 46)),
        Node(9, "SaveImage", (1610, 140), {"filename_prefix": "cfm-boost/sd15_txt2img_cfm_1024"},
             {"images": (8, 0)}, size=(420, 460)),
        note(10, (20, 200), (350, 560), text),
    ]
    groups = [Group("1 · SD1.5 base image, 512²", BASE_GROUP), Group("2 · CFM Boost ×2 → 1024²", (1210, -30, 355, 560))]
    return Workflow("sd15_txt2img_cfm_1024", "SD1.5 txt2img 512² + CFM Boost (bundled model) → 1024²", models,
                    nodes, groups)


def sd15_hires_fix_cfm() -> Workflow:
    models = bundled_models()
    text = f"""## Hires fix with CFM Boost: 512² → 1024² → second KSampler

Runs as shipped. The classic *hires fix*, with **CFM Boost** as the upscaler: KSampler makes a 512² latent, CFM
Boost upscales it 2× (sharper than a latent resize, so the second pass needs less denoise), and a second
KSampler at 1024² with **denoise 0.5** adds detail in the checkpoint's own style. VAE Decode shows the result.

**Model files**
{models_markdown(models)}

{BUNDLED_COST}

Lower the second KSampler's denoise (0.3–0.4) to stay closer to the upscaled image, raise it for more new detail."""
    nodes = [
        checkpoint_loader(),
        *sd15_base(2, steps=20, cfg=7.0, sampler="dpmpp_2m", scheduler="karras", model_from=(1, 0), seed=42),
        cfm_loader(6, (1230, 400)),
        Node(7, "CFMBoost", (1230, 40), dict(BOOST_DEFAULTS),
             {"samples": (5, 0), "vae": (1, 2), "cfm_model": (6, 0)}, size=(315, 314)),
        Node(8, "KSampler", (1590, 40),
             {"seed": 43, "steps": 12, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
              "denoise": 0.5},
             {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (7, 0)},
             title="KSampler 1024² (hires pass, denoise 0.5)", size=(315, 262)),
        Node(9, "VAEDecode", (1950, 40), links={"samples": (8, 0), "vae": (1, 2)}, size=(210, 46)),
        Node(10, "SaveImage", (1950, 140), {"filename_prefix": "cfm-boost/sd15_hires_fix_cfm"},
             {"images": (9, 0)}, size=(420, 460)),
        note(11, (20, 200), (350, 560), text),
    ]
    groups = [Group("1 · SD1.5 base image, 512²", BASE_GROUP),
              Group("2 · CFM Boost ×2, then a 1024² pass at denoise 0.5", (1210, -30, 715, 560))]
    return Workflow("sd15_hires_fix_cfm", "SD1.5 512² → CFM Boost (bundled) → KSampler 1024² denoise 0.5", models,
                    nodes, groups, view=(0.6, 20, 60))


def cascade_2048() -> Workflow:
    models = bundled_models()
    text = f"""## Cascade 512² → 1024² → 2048²

Runs as shipped. Two CFM Boost stages with the same bundled 2× model. The second stage works on a 2048² image, so
it solves the ODE in **256×256 model-latent tiles** (the bundled model's latent is half the pixel size; overlap 8,
blended at every step: no seams) and decodes/encodes through the VAE in 1024 px tiles; the final decode is
**VAE Decode (Tiled)**. Lower the tile sizes if you run out of memory.

**Model files**
{models_markdown(models)}

{BUNDLED_COST}"""
    nodes = [
        checkpoint_loader(),
        *sd15_base(2, steps=20, cfg=7.0, sampler="dpmpp_2m", scheduler="karras", model_from=(1, 0), seed=42),
        cfm_loader(6, (1230, 400)),
        Node(7, "CFMBoost", (1230, 40), dict(BOOST_DEFAULTS),
             {"samples": (5, 0), "vae": (1, 2), "cfm_model": (6, 0)}, title="CFM Boost 512² → 1024²",
             size=(315, 314)),
        Node(8, "CFMBoost", (1590, 40),
             {**BOOST_DEFAULTS, "seed": 1, "tile": 256, "vae_tiling": "always", "vae_tile_size": 1024},
             {"samples": (7, 0), "vae": (1, 2), "cfm_model": (6, 0)}, title="CFM Boost 1024² → 2048² (tiled)",
             size=(315, 314)),
        Node(9, "VAEDecodeTiled", (1970, 40),
             {"tile_size": 1024, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8},
             {"samples": (8, 0), "vae": (1, 2)}, size=(315, 150)),
        Node(10, "SaveImage", (1970, 240), {"filename_prefix": "cfm-boost/cascade_2048"}, {"images": (9, 0)},
             size=(420, 460)),
        note(11, (20, 200), (350, 560), text),
    ]
    groups = [Group("1 · SD1.5 base image, 512²", BASE_GROUP),
              Group("2 · two CFM stages ×2 ×2 → 2048²", (1210, -30, 715, 560))]
    return Workflow("cascade_2048", "SD1.5 512² → CFM 1024² → CFM 2048² (bundled model, tiles, tiled VAE)",
                    models, nodes, groups, view=(0.6, 20, 60))


def image_upscale_4x() -> Workflow:
    models = ["(bundled) cfm-pixel-2x — ships with the pack, nothing to download",
              "input/example.png — the sample image ComfyUI ships in its input folder (any image works)"]
    text = f"""## Upscale an image 4× with the bundled model (two 2× stages)

**Load Image → CFM Upscale Image → CFM Upscale Image → Save Image.** Runs as shipped: the bundled pixel-space CFM
model needs no VAE and no download. Each stage doubles the size (the second with seed 1 and 256×256 model-latent
tiles, so big images fit in memory) — what `cfm-boost upscale --scale 4` does on the command line.
ComfyUI ships `example.png`; pick or upload any image (the pack's `assets/coffee.png` is an exact 2× downscale of
a photo).
Delete the second stage for 2×. Latent CFM models also work here when you connect their VAE.

**Model files**
{models_markdown(models)}"""
    stage = {"solver": "default", "steps": 0, "noise_step": -1, "overlap": 8}
    nodes = [
        Node(1, "LoadImage", (400, 40), {"image": "example.png"}, size=(330, 360),
             models=["input/example.png (ships with ComfyUI; any image works)"]),
        cfm_loader(2, (400, 440)),
        Node(3, "CFMUpscaleImage", (780, 40), {**stage, "seed": 0, "tile": 0},
             {"image": (1, 0), "cfm_model": (2, 0)}, title="CFM Upscale Image ×2", size=(315, 242)),
        Node(4, "CFMUpscaleImage", (1140, 40), {**stage, "seed": 1, "tile": 256},
             {"image": (3, 0), "cfm_model": (2, 0)}, title="CFM Upscale Image ×2 (→ ×4, tiled)", size=(315, 242)),
        Node(5, "SaveImage", (1500, 40), {"filename_prefix": "cfm-boost/image_x4"}, {"images": (4, 0)},
             size=(420, 460)),
        note(6, (20, 40), (350, 470), text),
    ]
    return Workflow("image_upscale_4x", "LoadImage → CFMUpscaleImage ×2 → CFMUpscaleImage ×2 → SaveImage (bundled)",
                    models, nodes, view=(0.75, 20, 60))


TRAINED_HEADER = ("**Needs a model you train first** (no CFM weights for SD1.5 exist anywhere): until "
                  f"`models/cfm/{CFM_SD15}` exists, Queue stops at CFM Loader. The `sd15_…` templates run with the "
                  "bundled model instead.")


def needs_training_sd15_txt2img_1024() -> Workflow:
    models = [f"models/checkpoints/{SD15_CHECKPOINT} — any SD1.5 checkpoint (choose yours in Load Checkpoint)",
              f"models/cfm/{CFM_SD15} — a CFM 2× model for the SD1.5 VAE, trained by you"]
    text = f"""## SD1.5 txt2img → CFM Boost with a latent model → 1024²

{TRAINED_HEADER}

KSampler makes a 512² latent; **CFM Boost** upscales it 2× in the VAE's latent space (pixel-space upsampling
through the VAE, noise augmentation, a few ODE steps of the latent CFM model); VAE Decode shows the 1024² image.

**Model files**
{models_markdown(models)}

{TRAIN_HINT}

The CFM model only works with the VAE it was trained for (the SD1.5 VAE inside every SD1.5 checkpoint);
another VAE gives a one-line error."""
    nodes = [
        checkpoint_loader(),
        *sd15_base(2, steps=20, cfg=7.0, sampler="dpmpp_2m", scheduler="karras", model_from=(1, 0), seed=42),
        cfm_loader(6, (1230, 400), CFM_SD15),
        Node(7, "CFMBoost", (1230, 40), dict(BOOST_DEFAULTS),
             {"samples": (5, 0), "vae": (1, 2), "cfm_model": (6, 0)}, size=(315, 314)),
        Node(8, "VAEDecode", (1610, 40), links={"samples": (7, 0), "vae": (1, 2)}, size=(210, 46)),
        Node(9, "SaveImage", (1610, 140), {"filename_prefix": "cfm-boost/needs_training_sd15_txt2img_1024"},
             {"images": (8, 0)}, size=(420, 460)),
        note(10, (20, 200), (350, 620), text),
    ]
    groups = [Group("1 · SD1.5 base image, 512²", BASE_GROUP),
              Group("2 · CFM Boost ×2 (latent model) → 1024²", (1210, -30, 355, 560))]
    return Workflow("needs_training_sd15_txt2img_1024", "SD1.5 txt2img 512² + CFM Boost (a latent model you train) "
                    "→ 1024²", models, nodes, groups)


def needs_training_fast_base_lcm() -> Workflow:
    models = [f"models/checkpoints/{SD15_CHECKPOINT} — any SD1.5 checkpoint",
              f"models/loras/{LCM_LORA} — the LCM LoRA for SD1.5 (latent-consistency/lcm-lora-sdv1-5, renamed); "
              "bypass the LoRA node (Ctrl+B) if your checkpoint is already an LCM/turbo model",
              f"models/cfm/{CFM_SD15} — a CFM 2× model for the SD1.5 VAE, trained by you"]
    text = f"""## Fast base (LCM, 5 steps) → CFM with a latent model, step by step

{TRAINED_HEADER}

A few-step LCM base image (LCM LoRA + ModelSamplingDiscrete `lcm`, sampler `lcm`, 5 steps, cfg 1.5) at 512²,
then the CFM upscale as separate nodes: **Pixel-Space Upsample** (decode → resize ×2 → encode; `scale_by` 0 =
the model's factor), **Noise Augment** (the noised start point, seed fixed) and **CFM Upscale Latent** (the ODE).
CFM Boost does the same in one node.

**Model files**
{models_markdown(models)}

{TRAIN_HINT}"""
    nodes = [
        checkpoint_loader(),
        Node(2, "LoraLoaderModelOnly", (20, 200), {"lora_name": LCM_LORA, "strength_model": 1.0},
             {"model": (1, 0)}, size=(330, 82), models=[f"models/loras/{LCM_LORA}"], files=[LCM_LORA_FILE]),
        Node(3, "ModelSamplingDiscrete", (20, 320), {"sampling": "lcm", "zsnr": False}, {"model": (2, 0)},
             size=(330, 82)),
        *sd15_base(4, steps=5, cfg=1.5, sampler="lcm", scheduler="sgm_uniform", model_from=(3, 0), seed=7),
        cfm_loader(8, (1230, 40), CFM_SD15),
        Node(9, "PixelSpaceUpsample", (1230, 190),
             {"scale_by": 0.0, "resize_method": "bilinear", "vae_tiling": "auto", "vae_tile_size": 512},
             {"samples": (7, 0), "vae": (1, 2), "cfm_model": (8, 0)}, size=(315, 170)),
        Node(10, "NoiseAugment", (1230, 410),
             {"noise_step": -1, "seed": 7, "scale_factor": 0.18215, "shift_factor": 0.0},
             {"samples": (9, 0), "cfm_model": (8, 0)}, size=(315, 174)),
        Node(11, "CFMUpscaleLatent", (1230, 635),
             {"solver": "default", "steps": 0, "seed": 0, "noise_step": -1, "tile": 0, "overlap": 8},
             {"cfm_model": (8, 0), "samples": (10, 0)}, size=(315, 222)),
        Node(12, "VAEDecode", (1610, 40), links={"samples": (11, 0), "vae": (1, 2)}, size=(210, 46)),
        Node(13, "SaveImage", (1610, 140), {"filename_prefix": "cfm-boost/needs_training_fast_base_lcm"},
             {"images": (12, 0)}, size=(420, 460)),
        note(14, (20, 440), (350, 620), text),
    ]
    groups = [Group("1 · LCM base image, 5 steps, 512²", BASE_GROUP),
              Group("2 · CFM step by step ×2 (latent model) → 1024²", (1210, -30, 355, 910))]
    return Workflow("needs_training_fast_base_lcm", "LCM 5-step SD1.5 base + PixelSpaceUpsample → NoiseAugment → "
                    "CFMUpscaleLatent (a latent model you train)", models, nodes, groups)


WORKFLOW_BUILDERS = (sd15_txt2img_cfm_1024, sd15_hires_fix_cfm, cascade_2048, image_upscale_4x,
                     needs_training_sd15_txt2img_1024, needs_training_fast_base_lcm)


# ------------------------------------------------------------------------------------------ node definitions

def pack_object_info() -> dict[str, dict]:
    """``/object_info`` entries of this pack's nodes, from their classes (imported against the comfy stand-in)."""
    os.environ.setdefault("STUB_COMFY_BASE", tempfile.mkdtemp(prefix="stub-comfyui-"))
    for path in (str(ROOT), str(ROOT / "tests" / "comfy_stub")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import nodes as pack_nodes

    info = {}
    for name, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                      "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", ())),
                      "name": name, "display_name": pack_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
                      "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return info


def load_specs() -> dict[str, dict]:
    return {**json.loads(CORE_INFO.read_text()), **pack_object_info()}


def ordered_inputs(spec: dict) -> list[tuple[str, Any, dict]]:
    """(name, type, options) in the node's input order, required then optional (hidden inputs are not slots)."""
    out = []
    for section in ("required", "optional"):
        entries = spec["input"].get(section, {})
        for name in spec.get("input_order", {}).get(section, list(entries)):
            kind, *rest = entries[name]
            out.append((name, kind, rest[0] if rest else {}))
    return out


def is_widget(kind: Any, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def socket_type(kind: Any) -> str:
    return "COMBO" if isinstance(kind, list) else kind


# ------------------------------------------------------------------------------------------ the two formats

def api_format(wf: Workflow, specs: dict[str, dict]) -> dict:
    prompt = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.type in VIRTUAL_NODES:
            continue
        inputs = {name: [str(src), slot] for name, (src, slot) in node.links.items()}
        inputs.update(node.values)
        order = [name for name, _, _ in ordered_inputs(specs[node.type])]
        meta: dict[str, Any] = {"title": node.title or specs[node.type].get("display_name", node.type)}
        if node.models:
            meta["models"] = node.models
        prompt[str(node.id)] = {"inputs": {k: inputs[k] for k in order if k in inputs}, "class_type": node.type,
                                "_meta": meta}
    return prompt


def execution_order(wf: Workflow) -> dict[int, int]:
    """LiteGraph's ``order``: a topological order, sources first (ties by id)."""
    pending = {n.id: {src for src, _ in n.links.values()} for n in wf.nodes}
    order: dict[int, int] = {}
    while pending:
        ready = sorted(i for i, deps in pending.items() if deps <= set(order))
        if not ready:
            raise ValueError(f"{wf.name}: the graph has a cycle")
        for i in ready:
            order[i] = len(order)
            del pending[i]
    return order


def ui_format(wf: Workflow, specs: dict[str, dict]) -> dict:
    by_id = {n.id: n for n in wf.nodes}
    links: list[list] = []
    link_ids: dict[tuple[int, str], int] = {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.type in VIRTUAL_NODES:
            continue
        sockets = [(name, kind) for name, kind, opts in ordered_inputs(specs[node.type])
                   if not is_widget(kind, opts)]
        for dst_slot, (name, _kind) in enumerate(sockets):
            if name not in node.links:
                continue
            src, src_slot = node.links[name]
            src_type = specs[by_id[src].type]["output"][src_slot]
            link_id = len(links) + 1
            links.append([link_id, src, src_slot, node.id, dst_slot, src_type])
            link_ids[(node.id, name)] = link_id
            out_links.setdefault((src, src_slot), []).append(link_id)
    order = execution_order(wf)
    ui_nodes = [ui_node(node, specs, order[node.id], link_ids, out_links) for node in wf.nodes]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"cfm-boost/workflows/{wf.name}")),
        "revision": 0,
        "last_node_id": max(n.id for n in wf.nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": [{"id": i + 1, "title": g.title, "bounding": list(g.bounding), "color": GROUP_COLOR,
                    "font_size": 24, "flags": {}} for i, g in enumerate(wf.groups)],
        "config": {},
        "extra": {"ds": {"scale": wf.view[0], "offset": [wf.view[1], wf.view[2]]},
                  "frontendVersion": FRONTEND_VERSION,
                  "cfm_boost": {"description": wf.description, "models": wf.models,
                                "api_twin": f"api/{wf.name}_api.json"}},
        "version": 0.4,
    }


def ui_node(node: Node, specs: dict[str, dict], order: int, link_ids: dict, out_links: dict) -> dict:
    base = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size or (315, 100)),
            "flags": {}, "order": order, "mode": 0}
    if node.title:
        base["title"] = node.title
    if node.type in VIRTUAL_NODES:
        return {**base, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [node.values["text"]],
                **NOTE_COLORS}
    spec = specs[node.type]
    entries = ordered_inputs(spec)
    unknown = set(node.values) | set(node.links)
    unknown -= {name for name, _, _ in entries}
    if unknown:
        raise ValueError(f"{node.type} #{node.id} has no inputs {sorted(unknown)}")
    inputs, widgets_values = [], []
    for name, kind, _opts in [e for e in entries if not is_widget(e[1], e[2])]:
        inputs.append({"localized_name": name, "name": name, "type": socket_type(kind),
                       "link": link_ids.get((node.id, name))})
    for name, kind, opts in [e for e in entries if is_widget(e[1], e[2])]:
        if name not in node.values:
            raise ValueError(f"{node.type} #{node.id}: set widget {name!r} explicitly")
        inputs.append({"localized_name": name, "name": name, "type": socket_type(kind), "widget": {"name": name},
                       "link": None})
        widgets_values.append(node.values[name])
        if opts.get("control_after_generate"):
            widgets_values.append("fixed")
        if any(opts.get(flag) for flag in UPLOAD_FLAGS):
            inputs.append({"localized_name": "choose file to upload", "name": "upload", "type": "IMAGEUPLOAD",
                           "widget": {"name": "upload"}, "link": None})
            widgets_values.append("image")
    names = spec.get("output_name") or spec["output"]
    outputs = [{"localized_name": names[i], "name": names[i], "type": kind,
                "links": out_links.get((node.id, i))} for i, kind in enumerate(spec["output"])]
    properties: dict[str, Any] = {"Node name for S&R": node.type}
    if node.files:
        properties["models"] = [dict(f) for f in node.files]
    return {**base, "inputs": inputs, "outputs": outputs, "properties": properties,
            "widgets_values": widgets_values}


# ------------------------------------------------------------------------------------------ files

def dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def refresh_core_info(source: str, types: set[str]) -> None:
    """Copy the used core node types' definitions from an /object_info dump (file) or a running server (URL)."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source.rstrip("/") + "/object_info", timeout=120) as response:  # noqa: S310
            info = json.load(response)
    else:
        info = json.loads(Path(source).read_text())
    missing = sorted(t for t in types if t not in info)
    if missing:
        raise SystemExit(f"{source} lacks the core node types {missing}")
    dump(CORE_INFO, {t: info[t] for t in sorted(types)})
    print(f"wrote {CORE_INFO.relative_to(ROOT)} ({len(types)} node types)")


THUMB_CROP = (75, 95, 1575, 995)  # the canvas in a 1600×1000 screenshot, without the side bar, tabs and menu
THUMB_SIZE = (500, 300)


def write_thumbnail(screenshot: Path, out: Path) -> None:
    from PIL import Image

    with Image.open(screenshot) as image:
        thumb = image.convert("RGB").crop(THUMB_CROP).resize(THUMB_SIZE, Image.Resampling.LANCZOS)
    tmp = out.with_suffix(".tmp")
    thumb.save(tmp, format="JPEG", quality=82, optimize=True)
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--refresh-core-info", metavar="FILE_OR_URL",
                    help="first rewrite tests/data/core_object_info.json from this /object_info dump or server")
    ap.add_argument("--thumbnails-from", metavar="DIR", type=Path,
                    help="write workflows/<name>.jpg from the browser check's screenshots DIR/<name>.png")
    args = ap.parse_args(argv)
    workflows = [build() for build in WORKFLOW_BUILDERS]
    if args.refresh_core_info:
        used = {n.type for wf in workflows for n in wf.nodes} - VIRTUAL_NODES - PACK_NODE_TYPES
        refresh_core_info(args.refresh_core_info, used)
    specs = load_specs()
    for wf in workflows:
        dump(WORKFLOWS / f"{wf.name}.json", ui_format(wf, specs))
        dump(WORKFLOWS / "api" / f"{wf.name}_api.json", api_format(wf, specs))
        print(f"wrote workflows/{wf.name}.json and workflows/api/{wf.name}_api.json")
        if args.thumbnails_from:
            write_thumbnail(args.thumbnails_from / f"{wf.name}.png", WORKFLOWS / f"{wf.name}.jpg")
            print(f"wrote workflows/{wf.name}.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
