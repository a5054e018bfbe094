"""A local transformers model with a forward hook on one module: its output is the layer's activations.

The hook stops the forward pass once the layer has run (the layers after it are never computed), and
an encoder-decoder model (Whisper) runs its encoder only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autointerp.errors import InputError

INSTALL = "install the extra: pip install 'autointerp[extract]'"


class _Stop(Exception):
    """Raised by the hook to end the forward pass after the hooked layer."""


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise InputError(f"extraction needs the transformers library, which is not installed: {INSTALL}") from None
    return transformers


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputError(f"model folder {folder} not found: pass a local folder holding config.json and the weights "
                         f"(extract never downloads; fetch it first, e.g. `hf download NAME --local-dir DIR`)")
    if not (folder / "config.json").is_file():
        raise InputError(f"model folder {folder} has no config.json: pass the folder of a saved transformers model "
                         f"(the one with config.json and the weights)")


def load_part(kind: str, folder: Path) -> Any:
    """The model's feature extractor ("feature_extractor") or tokenizer ("tokenizer"), from local files only."""
    transformers = import_transformers()
    loader = transformers.AutoFeatureExtractor if kind == "feature_extractor" else transformers.AutoTokenizer
    try:
        return loader.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model folder {folder} has no usable {kind.replace('_', ' ')} ({reason}): "
                         f"save one next to the model (its save_pretrained files)") from None


def layer_lists(model: torch.nn.Module) -> str:
    """The model's stacks of layers, as `path.0-N` (what --layer can name), for error messages."""
    lists = [f"{name}.0-{len(m) - 1}" for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) and name]
    return ", ".join(lists[:8]) or "no layer stack found"


def resolve_layer(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The module at `path`; a leading wrapper name (`model.`, `transformer.`) that AutoModel's base model
    lacks is dropped, so paths copied from a *ForCausalLM model work too."""
    candidates = [path]
    head, _, rest = path.partition(".")
    if rest and head in {"model", "transformer", getattr(model, "base_model_prefix", "")}:
        candidates.append(rest)
    for candidate in candidates:
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    raise InputError(f"the model has no module {path!r}: name one with --layer, e.g. one of its layers "
                     f"({layer_lists(model)})")


class HookedModel:
    """Runs the model up to the hooked module and returns that module's output [batch, positions, d]."""

    def __init__(self, folder: Path, layer: str, device: torch.device, dtype: str) -> None:
        check_folder(folder)
        transformers = import_transformers()
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # extraction shows its own progress
        try:
            model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"model folder {folder} cannot be loaded ({reason}): pass a folder written by "
                             f"save_pretrained of a transformers model") from None
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        self.model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
        self.device, self.dtype, self.layer_name = device, getattr(torch, dtype), layer
        self.config = model.config
        encoder_decoder = bool(getattr(self.config, "is_encoder_decoder", False)) and hasattr(model, "get_encoder")
        self.runner = model.get_encoder() if encoder_decoder else model
        self._captured: torch.Tensor | None = None
        resolve_layer(self.model, layer).register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if hasattr(output, "to_tuple"):
            output = output.to_tuple()
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise InputError(f"module {self.layer_name!r} returns {type(output).__name__}, not a tensor: "
                             f"hook a layer whose output is the hidden states")
        self._captured = output
        raise _Stop

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The hooked layer's output for one batch, float32 on the CPU: [batch, positions, d]."""
        batch = next(iter(inputs.values())).shape[0]
        inputs = {k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
        self._captured = None
        with torch.inference_mode():
            try:
                self.runner(**inputs)
            except _Stop:
                pass
        out = self._captured
        if out is None:
            raise InputError(f"module {self.layer_name!r} did not run in the forward pass: hook a layer of the "
                             f"part that encodes the input ({layer_lists(self.model)})")
        if out.ndim == 2:
            out = out[:, None, :]
        if out.ndim != 3 or out.shape[0] != batch:
            raise InputError(f"module {self.layer_name!r} returns shape {tuple(out.shape)}: expected "
                             f"[batch={batch}, positions, d]; hook a layer that outputs hidden states")
        return out.float().cpu()
