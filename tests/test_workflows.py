"""The example workflows in ``workflows/`` (no server needed).

Node definitions: this pack's from its classes (the ``comfy`` stand-in fixture), the core nodes' from
``tests/data/core_object_info.json`` (ComfyUI a125cd8's ``/object_info``, trimmed to the types the workflows use).
UI format = what the template browser loads (``workflows/*.json``); API format = what ``POST /prompt`` runs
(``workflows/api/*_api.json``, in a subfolder so the template browser does not list them as templates).
What the real frontend makes of the UI files is checked by ``tests/test_browser.py``.
"""
from __future__ import annotations

import importlib.util
import json
import numbers
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "workflows"
API_DIR = WORKFLOW_DIR / "api"
CORE_INFO = Path(__file__).resolve().parent / "data" / "core_object_info.json"
UI_FILES = sorted(WORKFLOW_DIR.glob("*.json"))
API_FILES = sorted(API_DIR.glob("*_api.json"))
NAMES = [p.stem for p in UI_FILES]
EXPECTED = {"sd15_txt2img_cfm_1024", "sd15_hires_fix_cfm", "cascade_2048", "image_upscale_4x",
            "needs_training_sd15_txt2img_1024", "needs_training_fast_base_lcm"}
BUNDLED = "(bundled) cfm-pixel-2x"
NEEDS_TRAINING = "needs_training_"  # the prefix of templates that need a latent CFM model the user trains
# The frontend's missing-models dialog offers downloads only from these (MissingModelsWarning.vue, 1.27.10).
DOWNLOAD_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
PACK_NODES = {"CFMLoader", "PixelSpaceUpsample", "NoiseAugment", "CFMUpscaleLatent", "CFMBoost", "CFMUpscaleImage"}
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only nodes: one text widget, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Combos whose choices are the user's files: a workflow names a file the user is told to provide.
FILE_COMBOS = {("CheckpointLoaderSimple", "ckpt_name"): (".safetensors", ".ckpt"),
               ("LoraLoaderModelOnly", "lora_name"): (".safetensors",),
               ("LoadImage", "image"): (".png", ".jpg", ".jpeg", ".webp"),
               ("CFMLoader", "model_name"): (".safetensors",)}
# ComfyUI serves a pack's example workflows from the first of these folders that exists (custom_node_manager.py).
SERVED_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ node definitions

@pytest.fixture
def specs(comfy) -> dict[str, dict]:
    """``/object_info``-shaped definitions: core ones from the data file, the pack's from its node classes."""
    info = read(CORE_INFO)
    assert not PACK_NODES & set(info)
    for name, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                      "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES),
                      "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
                      "display_name": comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[name]}
    return info


def inputs_of(spec: dict) -> list[tuple[str, object, dict, bool]]:
    """(name, type, options, required) in input order."""
    out = []
    for section in ("required", "optional"):
        entries = spec["input"].get(section, {})
        for name in spec.get("input_order", {}).get(section, list(entries)):
            kind, *rest = entries[name]
            out.append((name, kind, rest[0] if rest else {}, section == "required"))
    return out


def is_widget(kind, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def combo_choices(kind, options: dict) -> list | None:
    if isinstance(kind, list):
        return kind
    return options.get("options") if kind == "COMBO" else None


def value_problem(node_type: str, name: str, kind, options: dict, value) -> str | None:
    """Why ``value`` is not acceptable for this widget (None if it is)."""
    where = f"{node_type}.{name}={value!r}"
    choices = combo_choices(kind, options)
    if (node_type, name) in FILE_COMBOS:
        ok = isinstance(value, str) and (value.lower().endswith(FILE_COMBOS[node_type, name])
                                         or (choices is not None and value in choices))
        return None if ok else f"{where}: not a file name of the expected kind"
    if choices is not None:
        return None if value in choices else f"{where}: not one of {choices}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{where}: not an integer"
    elif kind == "FLOAT":
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return f"{where}: not a number"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{where}: not a string"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{where}: not a boolean"
    if kind in ("INT", "FLOAT") and not options.get("min", value) <= value <= options.get("max", value):
        return f"{where}: outside [{options.get('min')}, {options.get('max')}]"
    return None


def expected_widgets_values(spec: dict) -> list[tuple[str, str]]:
    """(input name, "value" | "control" | "upload") per widgets_values slot, as the frontend lays them out."""
    slots = []
    for name, kind, options, _ in inputs_of(spec):
        if not is_widget(kind, options):
            continue
        slots.append((name, "value"))
        if options.get("control_after_generate"):
            slots.append((name, "control"))
        if any(options.get(flag) for flag in UPLOAD_FLAGS):
            slots.append((name, "upload"))
    return slots


# ------------------------------------------------------------------------------------------ files and layout

def test_the_expected_workflows_exist_in_both_formats():
    assert set(NAMES) == EXPECTED
    assert {p.name for p in API_FILES} == {f"{n}_api.json" for n in EXPECTED}
    assert not list(WORKFLOW_DIR.glob("*_api.json")), "API twins in workflows/ would be listed as templates"


def test_the_folder_is_one_comfyui_serves_and_no_earlier_one_shadows_it():
    assert WORKFLOW_DIR.name in SERVED_FOLDERS
    for earlier in SERVED_FOLDERS[: SERVED_FOLDERS.index(WORKFLOW_DIR.name)]:
        assert not (ROOT / earlier).exists(), f"{earlier}/ would also be served"


@pytest.mark.parametrize("path", UI_FILES + API_FILES, ids=lambda p: p.relative_to(WORKFLOW_DIR).as_posix())
def test_every_file_is_valid_json_object(path):
    data = read(path)
    assert isinstance(data, dict) and data
    if path.parent == API_DIR:
        assert all(isinstance(node, dict) and "class_type" in node for node in data.values())
    else:
        assert data["version"] == 0.4 and isinstance(data["nodes"], list) and isinstance(data["links"], list)


def test_readme_describes_every_workflow():
    text = (WORKFLOW_DIR / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"{name}.json" in text, name


@pytest.mark.parametrize("name", NAMES)
def test_thumbnail_is_a_small_jpeg(name):
    thumb = WORKFLOW_DIR / f"{name}.jpg"
    assert thumb.is_file(), "the template browser shows <name>.jpg as the thumbnail"
    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff" and thumb.stat().st_size < 150_000


# ------------------------------------------------------------------------------------------ API format

@pytest.mark.parametrize("name", NAMES)
def test_api_twin_type_checks(name, specs):
    prompt = read(API_DIR / f"{name}_api.json")
    problems = []
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if kind not in specs:
            problems.append(f"#{node_id}: unknown node type {kind}")
            continue
        declared = {n: (k, o, req) for n, k, o, req in inputs_of(specs[kind])}
        for input_name, value in node["inputs"].items():
            if input_name not in declared:
                problems.append(f"#{node_id} {kind}: no input {input_name!r}")
                continue
            in_kind, options, _ = declared[input_name]
            if isinstance(value, list):  # a link [source id, output index]
                src_id, slot = value
                src = prompt.get(src_id)
                if src is None or src["class_type"] not in specs:
                    problems.append(f"#{node_id}.{input_name}: links to missing node {src_id}")
                    continue
                outputs = specs[src["class_type"]]["output"]
                if not 0 <= slot < len(outputs):
                    problems.append(f"#{node_id}.{input_name}: {src['class_type']} has no output {slot}")
                elif outputs[slot] != in_kind:
                    problems.append(f"#{node_id}.{input_name}: {outputs[slot]} linked into {in_kind}")
            elif not is_widget(in_kind, options):
                problems.append(f"#{node_id}.{input_name}: {in_kind} input needs a link, got {value!r}")
            elif problem := value_problem(kind, input_name, in_kind, options, value):
                problems.append(f"#{node_id}: {problem}")
        missing = [n for n, (_, _, req) in declared.items() if req and n not in node["inputs"]]
        if missing:
            problems.append(f"#{node_id} {kind}: required inputs missing {missing}")
    assert not problems, "\n".join(problems)
    assert any(specs[n["class_type"]].get("output_node") for n in prompt.values()), "no output node"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_names_the_model_files_it_expects(name):
    prompt = read(API_DIR / f"{name}_api.json")
    loaders = [n for n in prompt.values()
               if n["class_type"] in ("CheckpointLoaderSimple", "CFMLoader", "LoraLoaderModelOnly", "LoadImage")]
    assert loaders
    for node in loaders:
        assert node["_meta"].get("models"), f"{node['class_type']} has no _meta.models note"


# ------------------------------------------------------------------------------------------ UI format

@pytest.mark.parametrize("name", NAMES)
def test_ui_links_type_check(name, specs):
    wf = read(WORKFLOW_DIR / f"{name}.json")
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes)
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] >= max(link_ids, default=0)
    problems = []
    for link_id, src_id, src_slot, dst_id, dst_slot, link_type in wf["links"]:
        src, dst = nodes.get(src_id), nodes.get(dst_id)
        if src is None or dst is None:
            problems.append(f"link {link_id}: missing node {src_id if src is None else dst_id}")
            continue
        out = src["outputs"][src_slot]
        inp = dst["inputs"][dst_slot]
        spec_type = specs[src["type"]]["output"][src_slot]
        if not link_type == out["type"] == inp["type"] == spec_type:
            problems.append(f"link {link_id}: link {link_type}, output {out['type']}, input {inp['type']}, "
                            f"definition {spec_type}")
        if link_id not in (out.get("links") or []):
            problems.append(f"link {link_id}: not in {src['type']}.outputs[{src_slot}].links")
        if inp.get("link") != link_id:
            problems.append(f"link {link_id}: {dst['type']}.inputs[{dst_slot}].link is {inp.get('link')}")
    for node in wf["nodes"]:  # the reverse direction: no dangling link ids on sockets
        for inp in node.get("inputs", []):
            if inp.get("link") is not None and inp["link"] not in link_ids:
                problems.append(f"node {node['id']}.{inp['name']}: link {inp['link']} does not exist")
        for out in node.get("outputs", []):
            problems += [f"node {node['id']}.{out['name']}: link {i} does not exist"
                         for i in out.get("links") or [] if i not in link_ids]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_ui_nodes_and_widgets_match_their_definitions(name, specs):
    wf = read(WORKFLOW_DIR / f"{name}.json")
    problems = []
    for node in wf["nodes"]:
        kind, values = node["type"], node.get("widgets_values", [])
        if kind in VIRTUAL_NODES:
            if not (len(values) == 1 and isinstance(values[0], str)):
                problems.append(f"node {node['id']} {kind}: widgets_values should be [text]")
            continue
        if kind not in specs:
            problems.append(f"node {node['id']}: unknown node type {kind}")
            continue
        spec = specs[kind]
        slots = expected_widgets_values(spec)
        if len(values) != len(slots):
            problems.append(f"node {node['id']} {kind}: {len(values)} widgets_values, the node has {len(slots)} "
                            f"({[s for s in slots]})")
            continue
        declared = {n: (k, o) for n, k, o, _ in inputs_of(spec)}
        for (input_name, role), value in zip(slots, values):
            if role == "control":
                if value != "fixed":
                    problems.append(f"node {node['id']} {kind}.{input_name}: control_after_generate {value!r}, "
                                    "use 'fixed' so the example reproduces")
            elif role == "upload":
                if value != "image":
                    problems.append(f"node {node['id']} {kind}: upload widget value {value!r}")
            elif problem := value_problem(kind, input_name, *declared[input_name], value):
                problems.append(f"node {node['id']}: {problem}")
        sockets = [n for n, k, o, _ in inputs_of(spec) if not is_widget(k, o)]
        ui_sockets = [i["name"] for i in node["inputs"] if "widget" not in i]
        if ui_sockets != sockets:
            problems.append(f"node {node['id']} {kind}: socket inputs {ui_sockets}, definition {sockets}")
        if [o["type"] for o in node["outputs"]] != spec["output"]:
            problems.append(f"node {node['id']} {kind}: outputs {[o['type'] for o in node['outputs']]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_has_a_note_naming_its_model_files(name):
    wf = read(WORKFLOW_DIR / f"{name}.json")
    notes = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] in VIRTUAL_NODES]
    assert notes and any("models/" in text or "bundled" in text for text in notes)
    for model in wf["extra"]["cfm_boost"]["models"]:
        assert any(model.split(" ")[0] in text for text in notes), model


@pytest.mark.parametrize("name", NAMES)
def test_ui_nodes_declare_their_model_files_the_way_the_frontend_reads_them(name):
    """``properties.models`` = [{name, url, directory}], ``name`` selected in the node's widgets (frontend 1.27.10:
    getSelectedModelsMetadata + loadGraphData); the bundled CFM model ships with the pack and declares nothing."""
    wf = read(WORKFLOW_DIR / f"{name}.json")
    declared = []
    for node in wf["nodes"]:
        files = node.get("properties", {}).get("models", [])
        values = [v for v in node.get("widgets_values", []) if isinstance(v, str)]
        for entry in files:
            assert set(entry) == {"name", "url", "directory"}, entry
            assert entry["name"] in values, f"{entry['name']} not selected in node {node['id']}: the frontend skips it"
            assert entry["url"].startswith("https://"), entry
            declared.append((entry["directory"], entry["name"]))
        if node["type"] in ("CheckpointLoaderSimple", "LoraLoaderModelOnly"):
            assert files, f"node {node['id']} {node['type']} declares no model file"
        if node["type"] == "CFMLoader":
            assert bool(files) == (node["widgets_values"][0] != BUNDLED), node["widgets_values"]
    for directory, file in declared:  # the note names every declared file
        assert any(f"models/{directory}/{file}" in model for model in wf["extra"]["cfm_boost"]["models"]), file
    if name.startswith(NEEDS_TRAINING):
        return
    assert "cfm" not in {directory for directory, _ in declared}, f"{name} needs a trained model: {NEEDS_TRAINING}…"


@pytest.mark.parametrize("name", NAMES)
def test_templates_run_with_what_ships_or_say_what_to_train(name):
    prompt = read(API_DIR / f"{name}_api.json")
    cfm_models = {n["inputs"]["model_name"] for n in prompt.values() if n["class_type"] == "CFMLoader"}
    wf = read(WORKFLOW_DIR / f"{name}.json")
    note = next(n["widgets_values"][0] for n in wf["nodes"] if n["type"] in VIRTUAL_NODES)
    if name.startswith(NEEDS_TRAINING):
        assert cfm_models and BUNDLED not in cfm_models
        assert "python -m cfm_core train" in note and "Needs a model you train first" in note
    else:
        assert cfm_models == {BUNDLED}, "a template without the needs_training_ prefix must run as shipped"
        assert "Runs as shipped" in note


def test_the_frontend_can_offer_the_downloads_that_exist():
    """Files with a public download (the SD1.5 checkpoint, the LCM LoRA) point where the dialog may download from."""
    for path in UI_FILES:
        for node in read(path)["nodes"]:
            for entry in node.get("properties", {}).get("models", []):
                if entry["directory"] != "cfm":
                    assert entry["url"].startswith(DOWNLOAD_SOURCES), entry
                    assert entry["name"].endswith(".safetensors"), entry


# ------------------------------------------------------------------------------------------ the twins agree

def ui_graph(wf: dict, specs: dict) -> tuple[dict, set, dict]:
    nodes = {n["id"]: n for n in wf["nodes"] if n["type"] not in VIRTUAL_NODES}
    edges = {(src, src_slot, dst, nodes[dst]["inputs"][dst_slot]["name"])
             for _, src, src_slot, dst, dst_slot, _ in wf["links"]}
    values = {}
    for node_id, node in nodes.items():
        slots = expected_widgets_values(specs[node["type"]])
        values[node_id] = {n: v for (n, role), v in zip(slots, node["widgets_values"]) if role == "value"}
    return {i: n["type"] for i, n in nodes.items()}, edges, values


def api_graph(prompt: dict) -> tuple[dict, set, dict]:
    types = {int(i): n["class_type"] for i, n in prompt.items()}
    edges = {(int(v[0]), v[1], int(i), name) for i, n in prompt.items() for name, v in n["inputs"].items()
             if isinstance(v, list)}
    values = {int(i): {k: v for k, v in n["inputs"].items() if not isinstance(v, list)} for i, n in prompt.items()}
    return types, edges, values


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_twins_describe_the_same_graph(name, specs):
    ui_types, ui_edges, ui_values = ui_graph(read(WORKFLOW_DIR / f"{name}.json"), specs)
    api_types, api_edges, api_values = api_graph(read(API_DIR / f"{name}_api.json"))
    assert ui_types == api_types
    assert ui_edges == api_edges
    assert ui_values == api_values


# ------------------------------------------------------------------------------------------ the generator

def test_files_are_what_the_generator_writes(specs, monkeypatch):
    """workflows/ is generated by scripts/make_workflows.py: a hand edit that the generator would undo fails."""
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    gen = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_workflows", gen)  # dataclasses resolve annotations through it
    spec.loader.exec_module(gen)
    for build in gen.WORKFLOW_BUILDERS:
        wf = build()
        assert gen.ui_format(wf, specs) == read(WORKFLOW_DIR / f"{wf.name}.json"), wf.name
        assert gen.api_format(wf, specs) == read(API_DIR / f"{wf.name}_api.json"), wf.name
