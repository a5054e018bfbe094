"""2-D and 3-D map coordinates of features from their decoder directions."""

from __future__ import annotations

import numpy as np
import torch


def map_coordinates(W_dec: torch.Tensor) -> np.ndarray:
    """[d_sae, 5]: PCA coordinates of the unit decoder directions: x, y (2-D) and x3, y3, z3 (3-D)."""
    from sklearn.decomposition import PCA

    directions = torch.nn.functional.normalize(W_dec.detach().double().cpu(), dim=1).numpy()
    components = min(3, *directions.shape)
    coords = PCA(n_components=components, random_state=0).fit_transform(directions) if components else np.zeros((len(directions), 0))
    coords = np.pad(coords, ((0, 0), (0, 3 - coords.shape[1])))
    return np.round(np.concatenate([coords[:, :2], coords], axis=1), 5)


def nearest(W_dec: torch.Tensor, k: int = 8, chunk: int = 2048) -> list[list[list[float]]]:
    """For each feature, its k nearest features by cosine of decoder directions: [[index, cosine], ...]."""
    directions = torch.nn.functional.normalize(W_dec.detach().float().cpu(), dim=1)
    n = directions.shape[0]
    k = min(k, n - 1)
    out: list[list[list[float]]] = []
    for lo in range(0, n, chunk):
        sims = directions[lo:lo + chunk] @ directions.T
        sims[torch.arange(sims.shape[0]), torch.arange(lo, lo + sims.shape[0])] = -torch.inf
        values, indices = sims.topk(k, dim=1) if k > 0 else (sims[:, :0], sims[:, :0].long())
        out += [[[int(i), round(float(v), 4)] for i, v in zip(row_i, row_v)]
                for row_i, row_v in zip(indices.tolist(), values.tolist())]
    return out
