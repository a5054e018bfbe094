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
