"""A TopK sparse autoencoder fitted to the demo embeddings, saved in the exact layout of LAION's
Majestrino SAE (OpenAI sparse_autoencoder FastAutoencoder: model/config.json + model/state_dict.pth
with pre_bias, encoder.weight, latent_bias, decoder.weight, stats_last_nonzero)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SEED = 20240611


def sae_config(d_model: int, latents: int, k: int) -> dict:
    return {"n_dirs_local": latents, "d_model": d_model, "k": k, "auxk": 32, "dead_steps_threshold": 256}


def train_sae(X: np.ndarray, cfg: dict, steps: int = 3000, lr: float = 2e-3,
              enc_scale_sigma: float = 0.2) -> dict:
    """Fit a TopK SAE to X (full batch, Adam, normalised MSE).

    Layout and encode rule follow OpenAI's sparse_autoencoder FastAutoencoder
    (as used by LAION's Majestrino SAE):
        pre     = (x - pre_bias) @ encoder.weight.T + latent_bias
        latents = relu(topk(pre, k))          (other entries zero)
        recon   = latents @ decoder.weight.T + pre_bias
    Decoder columns are kept at unit norm.  The encoder starts as the
    decoder's transpose with a small log-normal per-latent gain; a latent
    that never reaches the top-k gets no gradient and stays dead, as in real
    SAEs (the demo shows how dead latents are handled).  No auxk revival loss is used (the config's auxk / dead_steps_threshold are
    kept for format compatibility).
    """
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    n, d, k = cfg["n_dirs_local"], cfg["d_model"], cfg["k"]
    x = torch.from_numpy(X).float()

    pre_bias = torch.nn.Parameter(x.mean(0).clone())
    # decoder columns start at randomly chosen (centred) corpus rows, so that nearly every latent
    # points somewhere the data lives and fires
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))[:n] % len(x)
    dec = (x[rows] - x.mean(0)).t() + 0.1 * torch.randn(d, n)
    dec /= dec.norm(dim=0, keepdim=True)
    gain = torch.exp(enc_scale_sigma * torch.randn(n))
    decoder_w = torch.nn.Parameter(dec.clone())
    encoder_w = torch.nn.Parameter(dec.t().clone() * gain[:, None])
    latent_bias = torch.nn.Parameter(torch.zeros(n))
    opt = torch.optim.Adam([pre_bias, encoder_w, latent_bias, decoder_w], lr=lr)

    def encode(xb):
        pre = (xb - pre_bias) @ encoder_w.t() + latent_bias
        vals, idx = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    stats_last_nonzero = torch.zeros(n, dtype=torch.long)
    var = ((x - x.mean(0)) ** 2).sum(-1).mean()
    for step in range(steps):
        lat = encode(x)
        err = x - (lat @ decoder_w.t() + pre_bias)
        loss = (err ** 2).sum(-1).mean() / var
        with torch.no_grad():
            stats_last_nonzero += 1
            stats_last_nonzero[(lat > 0).any(0)] = 0
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            # drop the gradient component that would change column norms
            g = decoder_w.grad
            g -= (g * decoder_w).sum(0, keepdim=True) * decoder_w
        opt.step()
        with torch.no_grad():
            decoder_w /= decoder_w.norm(dim=0, keepdim=True)
        if step % 1000 == 0 or step == steps - 1:
            print(f"  sae step {step:5d}  nmse {float(loss.detach()):.4f}")

    with torch.no_grad():
        lat = encode(x)
        recon = lat @ decoder_w.t() + pre_bias
        fve = 1.0 - float(((x - recon) ** 2).sum()
                          / ((x - x.mean(0)) ** 2).sum())
        fires = (lat > 0).sum(0)
    state = {
        "pre_bias": pre_bias.detach().clone().contiguous(),
        "latent_bias": latent_bias.detach().clone().contiguous(),
        "stats_last_nonzero": stats_last_nonzero.clone(),
        "encoder.weight": encoder_w.detach().clone().contiguous(),
        "decoder.weight": decoder_w.detach().clone().contiguous(),
    }
    return dict(state=state, fve=fve, n_dead=int((fires == 0).sum()),
                fires=fires.numpy())


def save_sae(state: dict, cfg: dict, folder: Path) -> None:
    import torch
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "config.json", "w") as f:
        json.dump(cfg, f)
        f.write("\n")
    torch.save(state, folder / "state_dict.pth")

