"""The internal SAE encoder every checkpoint layout is mapped onto."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class Encoder:
    """pre = (x - b_pre) @ W_enc + b_enc; acts = activation(pre); x_hat = acts @ W_dec + b_dec."""
    W_enc: torch.Tensor
    """[d_in, d_sae]"""
    b_enc: torch.Tensor
    """[d_sae]"""
    b_pre: torch.Tensor
    """[d_in], subtracted from the input before encoding."""
    W_dec: torch.Tensor
    """[d_sae, d_in]"""
    b_dec: torch.Tensor
    """[d_in]"""
    activation: Literal["topk", "relu"]
    k: int | None
    format: str
    path: str
    dtype: str = "float32"

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def n_params(self) -> int:
        return sum(t.numel() for t in (self.W_enc, self.b_enc, self.b_pre, self.W_dec, self.b_dec))

    def describe_activation(self) -> str:
        return f"top-{self.k} then ReLU" if self.activation == "topk" else "ReLU"

    def to(self, device: torch.device | str) -> "Encoder":
        moved = {name: getattr(self, name).to(device) for name in ("W_enc", "b_enc", "b_pre", "W_dec", "b_dec")}
        return Encoder(**moved, activation=self.activation, k=self.k, format=self.format, path=self.path,
                       dtype=self.dtype)

    def preacts(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_pre) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.activation == "topk":
            values, indices = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, indices, values.relu())
        return pre.relu()

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return acts @ self.W_dec + self.b_dec

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for tensor in (self.W_enc, self.b_enc, self.b_pre, self.W_dec, self.b_dec):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(f"{self.activation}:{self.k}".encode())
        return digest.hexdigest()
