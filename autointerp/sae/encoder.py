"""The internal SAE encoder every checkpoint layout is mapped onto.

    x' = normalize(x)                        input normalization: none, constant_norm_rescale, layer_norm
    pre = (x' - b_pre) @ W_enc + b_enc       the pre-activation (for gated SAEs: the gate)
    acts = activate(pre)                     the published inference rule (see `Activation`)
    x_hat = denormalize(acts @ W_dec + b_dec)

Loaders fold everything else (decoder-norm rescaling, fine-tuning scales, bias scaling) into these
tensors, so that `activate(preacts(x))` is the library's own inference output and `decode` is its
reconstruction in the raw input space. All methods work on whole batches; no Python loops.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Literal

import torch

Activation = Literal["relu", "topk", "batchtopk", "jumprelu", "gated"]
"""relu: ReLU. topk: per-row top-k, then ReLU. batchtopk: ReLU then one global threshold (the
inference rule of dictionary_learning's BatchTopKSAE); without a learned threshold (negative or
missing) per-row top-k. jumprelu: ReLU where pre > the feature's threshold. gated: fires where the
gate pre > 0 with magnitude ReLU(gate_scale * pre + gate_offset)."""

InputNorm = Literal["none", "constant_norm_rescale", "layer_norm"]
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LAYER_NORM_EPS = 1e-5


@dataclass
class Encoder:
    """One SAE, ready to encode batches of raw input rows [B, d_in]; outputs are float32."""

    W_enc: torch.Tensor
    """[d_in, d_sae]"""
    b_enc: torch.Tensor
    """[d_sae]"""
    b_pre: torch.Tensor
    """[d_in], subtracted from the (normalized) input before encoding."""
    W_dec: torch.Tensor
    """[d_sae, d_in]"""
    b_dec: torch.Tensor
    """[d_in]"""
    activation: Activation
    k: int | None
    format: str
    path: str
    dtype: str = "float32"
    """The dtype the checkpoint stores its weights in."""
    threshold: float | None = None
    """batchtopk: the global threshold; None when the checkpoint never learned one."""
    thresholds: torch.Tensor | None = None
    """jumprelu: [d_sae] per-feature thresholds."""
    gate_scale: torch.Tensor | None = None
    """gated: [d_sae], exp(r_mag)."""
    gate_offset: torch.Tensor | None = None
    """gated: [d_sae], b_mag - exp(r_mag) * b_gate, so that the magnitude is ReLU(gate_scale * pre + gate_offset)."""
    input_norm: InputNorm = "none"
    variant: str = ""
    """The architecture inside the format, e.g. BatchTopKSAE or jumprelu (shown by inspect-sae)."""
    param_count: int | None = None
    """Parameters in the checkpoint (default: the numel of the tensors above)."""
    precision: str = "float32"
    """The dtype the weights are held and multiplied in."""
    _norm_stats: tuple[torch.Tensor, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def n_params(self) -> int:
        if self.param_count is not None:
            return self.param_count
        return sum(t.numel() for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.init and isinstance(getattr(self, f.name), torch.Tensor)}

    def describe_activation(self) -> str:
        rule = {"relu": lambda: "ReLU",
                "topk": lambda: f"top-{self.k} then ReLU",
                "batchtopk": self._describe_batchtopk,
                "jumprelu": self._describe_jumprelu,
                "gated": lambda: "gated: fires where the gate pre-activation > 0, "
                                 "magnitude ReLU(exp(r_mag)·(x·W) + b_mag)"}
        text = rule[self.activation]()
        if self.input_norm != "none":
            text += f", on inputs normalized by {self.input_norm}"
        return text

    def _describe_batchtopk(self) -> str:
        if self.threshold is None:
            return f"BatchTopK without a learned threshold: per-row top-{self.k} then ReLU"
        return f"BatchTopK: ReLU then global threshold {self.threshold:.6g} (k={self.k} in training)"

    def _describe_jumprelu(self) -> str:
        t = self.thresholds.float()
        if bool((t == t[0]).all()):
            return f"JumpReLU: threshold {t[0].item():.6g} for every feature"
        return (f"JumpReLU: per-feature thresholds (min {t.min().item():.4g}, median {t.median().item():.4g}, "
                f"max {t.max().item():.4g})")

    def to(self, device: torch.device | str) -> "Encoder":
        return dataclasses.replace(self, **{name: t.to(device) for name, t in self._tensors().items()})

    def cast(self, precision: str) -> "Encoder":
        """The same SAE with its matrices and biases held in `precision` (float32, bfloat16, float16);
        thresholds and gate parameters stay float32."""
        dtype = PRECISIONS[precision]
        big = ("W_enc", "b_enc", "b_pre", "W_dec", "b_dec")
        return dataclasses.replace(self, precision=precision, **{name: getattr(self, name).to(dtype) for name in big})

    def zero_decoder_rows(self) -> torch.Tensor:
        """Indices of features whose decoder row is all zeros (dead-looking: they can reconstruct nothing)."""
        return torch.nonzero(self.W_dec.float().norm(dim=1) == 0).flatten()

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each row's input-normalization statistics: (coefficient,) or (mean, std); () for none."""
        if self.input_norm == "constant_norm_rescale":
            return (self.d_in ** 0.5 / x.norm(dim=-1, keepdim=True),)
        if self.input_norm == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            return mu, (x - mu).std(dim=-1, keepdim=True)
        return ()

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "none":
            return x
        stats = self._stats(x)
        self._norm_stats = stats  # (for a decode given no rows: the last preacts call's)
        if self.input_norm == "constant_norm_rescale":
            return x * stats[0]
        mu, std = stats
        return (x - mu) / (std + LAYER_NORM_EPS)

    def _denormalize(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Back to the raw input space, with the statistics of the rows `x` (computed here: the pass's
        lanes call preacts on other batches meanwhile), else of the last preacts call."""
        if self.input_norm == "none":
            return out
        stats = self._stats(x.float()) if x is not None else self._norm_stats
        if stats is None or stats[0].shape[:-1] != out.shape[:-1]:
            raise ValueError("decode of an input-normalizing SAE needs the input rows: pass x, or call preacts(x) "
                             "on the same batch first")
        if self.input_norm == "constant_norm_rescale":
            return out / stats[0]
        mu, std = stats
        return out * std + mu

    def preacts(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activations [..., d_sae] (float32) of raw input rows [..., d_in]; for gated SAEs the gate.
        out: a float32 [rows, d_sae] buffer to write them into, and return (a batch loop that reuses its
        buffers spares the allocator fresh pages each batch: 20-25% of a small encode; with half-precision
        weights they are copied into it)."""
        x = self._normalize(x.float()).to(self.W_enc.dtype)
        flat = x.reshape(-1, self.d_in) - self.b_pre
        if out is not None and self.W_enc.dtype == torch.float32:
            return torch.addmm(self.b_enc, flat, self.W_enc, out=out).reshape(*x.shape[:-1], self.d_sae)
        pre = torch.addmm(self.b_enc, flat, self.W_enc).float()
        if out is not None:
            return out.copy_(pre).reshape(*x.shape[:-1], self.d_sae)
        return pre.reshape(*x.shape[:-1], self.d_sae)

    def _floor(self) -> torch.Tensor | float | None:
        """What a pre-activation must exceed to be active ([d_sae] for JumpReLU); None: each row's top-k."""
        if self.activation == "jumprelu":
            return self.thresholds.clamp_min(0)
        if self.activation == "batchtopk" and self.threshold is not None:
            return max(self.threshold, 0.0)
        return 0.0 if self.activation in ("relu", "gated") else None

    def _magnitude(self, pre: torch.Tensor, features: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """gated: ReLU(gate_scale * pre + gate_offset) of these features' pre-activations; else pre."""
        if self.activation != "gated":
            return pre
        return (self.gate_scale[features] * pre + self.gate_offset[features]).relu()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The inference activations [..., d_sae] for pre-activations from `preacts`."""
        floor = self._floor()
        if floor is None:
            values, indices = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, indices, values.relu())
        return torch.where(pre > floor, self._magnitude(pre), 0.0)

    def active(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, feature, activation) of every nonzero of `activate` on 2-D pre-activations, in row order,
        without the dense [rows, d_sae] activations: the top-k, or the entries above the threshold."""
        floor = self._floor()
        if floor is None:
            values, features = pre.topk(min(self.k, pre.shape[1]), dim=1)
            rows = torch.arange(pre.shape[0], device=pre.device)[:, None].expand_as(features)
        else:
            rows, features = torch.nonzero(pre > floor, as_tuple=True)
            values = self._magnitude(pre[rows, features], features)
        keep = values > 0
        if bool(keep.all()):  # (the usual case: a masked copy costs 5-10% of a small top-k)
            return rows.reshape(-1), features.reshape(-1), values.reshape(-1)
        return rows[keep], features[keep], values[keep]

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction [..., d_in] (float32) in the raw input space. For an SAE that normalizes
        its inputs row by row, the row statistics come from `x` or else from the last `preacts` call."""
        flat = acts.reshape(-1, self.d_sae).to(self.W_dec.dtype)
        out = torch.addmm(self.b_dec, flat, self.W_dec).float().reshape(*acts.shape[:-1], self.d_in)
        return self._denormalize(out, x)

    def decode_sparse(self, rows: torch.Tensor, features: torch.Tensor, values: torch.Tensor, n_rows: int,
                      x: torch.Tensor | None = None) -> torch.Tensor:
        """decode() of activations given as (row, feature, value) entries sorted by row, without the dense
        [n_rows, d_sae] matrix: cost proportional to the number of active entries."""
        counts = torch.bincount(rows, minlength=n_rows)
        offsets = torch.cumsum(counts, 0) - counts
        out = torch.nn.functional.embedding_bag(features, self.W_dec, offsets, mode="sum",
                                                per_sample_weights=values.to(self.W_dec.dtype))
        out = (out + self.b_dec).float()
        return self._denormalize(out, x)

    def fingerprint(self) -> str:
        """Identifies the weights and the activation rule (stable for the plain top-k and ReLU layouts)."""
        digest = hashlib.sha256()
        for tensor in (self.W_enc, self.b_enc, self.b_pre, self.W_dec, self.b_dec):
            digest.update(_bytes(tensor))
        digest.update(f"{self.activation}:{self.k}".encode())
        if self.threshold is not None or self.input_norm != "none":
            digest.update(f":{self.threshold}:{self.input_norm}".encode())
        for tensor in (self.thresholds, self.gate_scale, self.gate_offset):
            if tensor is not None:
                digest.update(_bytes(tensor))
        return digest.hexdigest()


def _bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu()
    if tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor.contiguous().numpy().tobytes()
