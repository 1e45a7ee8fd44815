"""Stand-in for ``comfy.model_patcher.ModelPatcher``: the constructor and the load/unload bookkeeping.

Like the real class it *writes* ``model.device``, ``model.model_loaded_weight_memory``, ``model.model_lowvram`` and
friends on the wrapped module (model_patcher.py:222-270, 735), so a module whose ``device`` is a read-only property
fails here exactly as it would in ComfyUI.
"""
from __future__ import annotations

import comfy.model_management


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        elif self.model.device is None:
            self.model.device = offload_device
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.model_size()
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.parent = None
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0
        if not hasattr(self.model, "lowvram_patch_counter"):
            self.model.lowvram_patch_counter = 0
        if not hasattr(self.model, "model_lowvram"):
            self.model.model_lowvram = False
        if not hasattr(self.model, "current_weight_patches_uuid"):
            self.model.current_weight_patches_uuid = None

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = comfy.model_management.module_size(self.model)
        return self.size

    def loaded_size(self):
        return self.model.model_loaded_weight_memory

    def current_loaded_device(self):
        return self.model.device

    def model_dtype(self):
        if hasattr(self.model, "get_dtype"):
            return self.model.get_dtype()

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        self.model.to(device_to)
        self.model.model_lowvram = False
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        if load_weights:
            self.load(device_to, lowvram_model_memory, force_patch_weights, full_load=True)
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to
            self.model.model_loaded_weight_memory = 0

    def detach(self, unpatch_all=True):
        self.unpatch_model(self.offload_device, unpatch_weights=unpatch_all)
        return self.model
