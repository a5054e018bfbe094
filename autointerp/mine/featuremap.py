"""2-D and 3-D map coordinates of features from their decoder directions, and decoder-direction
neighbours. The mine stage stores both on every feature (x, y; x3, y3, z3; neighbors).

Map: the unit decoder directions are reduced to PCA_DIMS dimensions by PCA, then laid out by UMAP
(cosine metric) when the umap-learn package is installed, else by t-SNE (scikit-learn). t-SNE is fit
on at most TSNE_FIT_2D (2-D) / TSNE_FIT_3D (3-D) features, an evenly spaced subset, and every other
feature is placed at the distance-weighted mean of its TSNE_NEIGHBOURS nearest fitted features, so a
30,000-feature SAE maps in a minute or two on a laptop. Under MIN_FEATURES features the map is the
PCA projection itself. Runs are deterministic (fixed seeds).

Both depend on the decoder only, so the mine stage starts them (Layout) before its pass over the
corpus, in a background thread: the map's t-SNE then runs beside the pass."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import torch

PCA_DIMS = 50
MIN_FEATURES = 64
TSNE_FIT_2D = 2000
TSNE_FIT_3D = 2000
TSNE_NEIGHBOURS = 5


def map_method() -> str:
    """Which layout map_coordinates uses in this installation: umap, tsne (PCA for tiny SAEs)."""
    return "umap" if importlib.util.find_spec("umap") is not None else "tsne"


def layout(d_sae: int, d_in: int) -> str:
    """What map_coordinates lays out an SAE of this shape with: pca, tsne or umap (recorded at mine time)."""
    return "pca" if d_sae < MIN_FEATURES or min(PCA_DIMS, d_sae, d_in) < 3 else map_method()


LAYOUTS = {"pca": "their first principal components",
           "tsne": f"t-SNE of their first {PCA_DIMS} principal components",
           "umap": f"UMAP (cosine) of their first {PCA_DIMS} principal components"}
"""What placed the features, in words, by recorded layout."""


def describe_layout(method: str | None) -> str:
    return LAYOUTS.get(method or "", "a layout this database did not record (mined by an earlier version)")


def map_coordinates(W_dec: torch.Tensor) -> np.ndarray:
    """[d_sae, 5]: x, y (2-D map) and x3, y3, z3 (3-D map) of the unit decoder directions."""
    directions = torch.nn.functional.normalize(W_dec.detach().double().cpu(), dim=1).numpy()
    reduced = _pca(directions, min(PCA_DIMS, *directions.shape))
    method = layout(*directions.shape)
    if method == "pca":
        coords = np.pad(reduced[:, :3], ((0, 0), (0, 3 - reduced[:, :3].shape[1])))
        flat, solid = coords[:, :2], coords
    elif method == "umap":
        flat, solid = _umap(reduced, 2), _umap(reduced, 3)
    else:
        flat, solid = _tsne(reduced, 2, TSNE_FIT_2D), _tsne(reduced, 3, TSNE_FIT_3D)
    return np.round(np.concatenate([flat, solid], axis=1).astype(np.float64), 4)


def _pca(points: np.ndarray, dims: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if dims == 0:
        return np.zeros((len(points), 0))
    return PCA(n_components=dims, random_state=0).fit_transform(points)


def _umap(points: np.ndarray, dims: int) -> np.ndarray:
    import warnings

    import umap

    with warnings.catch_warnings():  # a fixed seed makes UMAP single-threaded, and it says so
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return umap.UMAP(n_components=dims, metric="cosine", random_state=0, n_jobs=1).fit_transform(points)


def _tsne(points: np.ndarray, dims: int, fit_at_most: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from sklearn.neighbors import NearestNeighbors

    n = len(points)
    fitted = np.unique(np.linspace(0, n - 1, min(n, fit_at_most)).round().astype(int))
    perplexity = float(min(30.0, (len(fitted) - 1) / 3))
    layout = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=0, max_iter=500,
                  method="barnes_hut").fit_transform(points[fitted])
    if len(fitted) == n:
        return layout
    out = np.empty((n, dims))
    out[fitted] = layout
    rest = np.setdiff1d(np.arange(n), fitted)
    distances, neighbours = NearestNeighbors(n_neighbors=TSNE_NEIGHBOURS).fit(points[fitted]).kneighbors(points[rest])
    weights = 1.0 / (distances + 1e-9)
    out[rest] = (layout[neighbours] * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
    return out


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


class Layout:
    """map_coordinates and nearest of a decoder, computed in a daemon thread from construction on (a
    run that fails meanwhile exits without waiting for it); result() waits and returns (coordinates,
    neighbours), or raises what the computation raised."""

    def __init__(self, W_dec: torch.Tensor) -> None:
        self._result: tuple[np.ndarray, list] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(W_dec.detach().cpu(),), name="feature-map",
                                        daemon=True)
        self._thread.start()

    def _run(self, W_dec: torch.Tensor) -> None:
        try:
            self._result = map_coordinates(W_dec), nearest(W_dec)
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self) -> tuple[np.ndarray, list[list[list[float]]]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
