import json
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors
from sqlalchemy import select

from autointerp.mine import featuremap
from autointerp.config import GroupConfig, load_config
from autointerp.explain.stage import explain
from autointerp.mine.featuremap import map_coordinates
from autointerp.llm.base import Completion, Model, Request
from autointerp.llm.mock import MockModel
from autointerp.store.schema import Bin, Group, Label, Placement
from autointerp.taxonomy.stage import taxonomy
from tests.factory import run_mine


def test_offline_groups_follow_tag_columns_and_bins_cluster_labels(planted, config, store):
    run_mine(config, store)
    explain(store, config, None)
    taxonomy(store, config, None)
    with store.session() as s:
        groups = {g.id: g.name for g in s.scalars(select(Group))}
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
        bins = {b.id: b for b in s.scalars(select(Bin))}
    assert sorted(groups.values()) == ["Color", "Shape"]
    by_name = {name: gid for gid, name in groups.items()}
    for feature, (key, _) in planted.truth.items():
        assert placements[feature].groups == [by_name[key.title()]]
        assert placements[feature].bin_id in bins
    assert sum(b.size for b in bins.values()) == len(placements)
    assert len(bins) == round(len(placements) ** 0.5)
    with store.session() as s:
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
    # Labels with the same title land in the same bin; a bin is named by words of its members.
    for a in placements:
        for b in placements:
            if labels[a].title == labels[b].title:
                assert placements[a].bin_id == placements[b].bin_id
    for bin_id, b in bins.items():
        text = " ".join(f"{labels[f].title} {labels[f].description}".lower()
                        for f, p in placements.items() if p.bin_id == bin_id)
        assert all(word.lower() in text for word in b.name.split(", "))


class Sorter(Model):
    """A fake LLM for group assignment: puts every listed feature in groups [1, 2, 7, 1] (7 does not
    exist), except the features in `skip`, which it leaves out of any request with more than one
    feature; `always` it leaves out every time."""
    provider = "fake"

    def __init__(self, skip: set[int], always: set[int]) -> None:
        super().__init__("sorter")
        self.skip, self.always = skip, always
        self.history: list[Request] = []

    async def _execute(self, request: Request, structured: str = "json_schema") -> Completion:
        self.history.append(request)
        features = [int(f) for f in re.findall(r"^- feature (\d+): ", request.user, re.M)]
        left = self.always | (self.skip if len(features) > 1 else set())
        answer = {"assignments": [{"feature": f, "groups": [1, 2, 7, 1]} for f in features if f not in left]}
        return Completion(text=json.dumps(answer))


def test_llm_group_assignment_in_batches(planted, config, store):
    run_mine(config, store)
    config.taxonomy.groups = [GroupConfig(name="Colors", description="hues"), GroupConfig(name="Shapes")]
    config.taxonomy.batch_size = 4
    explain(store, config, MockModel())
    with store.session() as s:
        labeled = sorted(s.scalars(select(Label.feature_id).where(Label.status == "done")))
    # labeled[3] is left out of its batch, then placed when asked alone; labeled[5] is always left out
    model = Sorter(skip={labeled[3]}, always={labeled[5]})
    taxonomy(store, config, model)
    with store.session() as s:
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
    assert placements[labeled[5]].status == "failed" and "left this feature out" in placements[labeled[5]].error
    assert all(placements[f].groups == [1, 2] for f in labeled if f != labeled[5])
    requests = [r for r in model.history if r.template == "groups"]
    batches = -(-len(labeled) // 4)
    assert len(requests) == batches + 2  # one follow-up for each batch that left a feature out
    assert "1. Colors: hues" in requests[0].user
    # A second run asks only about the failed feature's batch, with the same requests: the log answers.
    model.history.clear()
    taxonomy(store, config, model)
    assert [r for r in model.history if r.template == "groups"] == []
    with store.session() as s:
        assert s.get(Placement, labeled[5]).status == "failed"


class Librarian(Model):
    """A fake LLM for the taxonomy: proposes two groups, puts features whose title names a color in
    group 1 and the rest in group 2, and names every bin but the last after its first title."""
    provider = "fake"

    def __init__(self) -> None:
        super().__init__("librarian")
        self.history: list[Request] = []

    async def _execute(self, request: Request, structured: str = "json_schema") -> Completion:
        self.history.append(request)
        if request.template == "propose_groups":
            answer = {"groups": [{"name": "Colors", "description": "hues"}, {"name": "Shapes", "description": "forms"}]}
        elif request.template == "groups":
            features = re.findall(r"^- feature (\d+): (.*?): ", request.user, re.M)
            answer = {"assignments": [{"feature": int(f), "groups": [1 if title.startswith("Color") else 2]}
                                      for f, title in features]}
        else:
            found = re.findall(r"^Bin (\d+) .*\n- (.*)$", request.user, re.M)
            answer = {"bins": [{"bin": int(b), "name": f"Theme of {title}"} for b, title in found[:-1]]}
        return Completion(text=json.dumps(answer))


def test_llm_proposes_groups_and_names_bins(planted, config, store):
    run_mine(config, store)
    explain(store, config, None)  # offline titles: "Color: red", "Shape: star", ...
    model = Librarian()
    taxonomy(store, config, model)
    with store.session() as s:
        groups = {g.id: g.name for g in s.scalars(select(Group))}
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
        bins = {b.id: b for b in s.scalars(select(Bin))}
        titles = {l.feature_id: l.title for l in s.scalars(select(Label)) if l.status == "done"}
    assert groups == {1: "Colors", 2: "Shapes"}
    for feature, (key, _) in planted.truth.items():
        assert placements[feature].groups == [1 if key == "color" else 2]
    named = [b for b in bins.values() if b.name.startswith("Theme of ")]
    assert len(named) == len(bins) - 1 >= 2
    for b in named:  # the LLM named the bin after one of its own members
        members = {titles[f] for f, p in placements.items() if p.bin_id == b.id}
        assert b.name.removeprefix("Theme of ") in members
    unnamed = next(b for b in bins.values() if not b.name.startswith("Theme of "))
    assert unnamed.name == ", ".join(unnamed.terms[:3]).title()  # the LLM skipped it: its top terms
    templates = [r.template for r in model.history]
    assert templates[0] == "propose_groups" and templates.count("bins") == 1
    assert "frequent words" in next(r.user for r in model.history if r.template == "bins")
    # A second run keeps groups, placements and bins, and asks nothing.
    model.history.clear()
    taxonomy(store, config, model)
    assert model.history == []


def test_the_majestrino_example_lists_its_14_groups():
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "majestrino_groups.toml")
    assert len(config.taxonomy.groups) == 14 and config.taxonomy.max_groups_per_feature == 2
    assert config.taxonomy.groups[10].name == "Emotions (EmoNet 40)"


def _clustered(n: int, clusters: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, 32))
    which = np.arange(n) % clusters
    return torch.tensor(centers[which] + 0.2 * rng.normal(size=(n, 32)), dtype=torch.float32), which


def test_map_coordinates_keep_clusters_apart():
    W_dec, which = _clustered(80, 4, 0)
    coords = map_coordinates(W_dec)
    assert coords.shape == (80, 5) and np.isfinite(coords).all()
    assert silhouette_score(coords[:, :2], which) > 0.5
    _, neighbours = NearestNeighbors(n_neighbors=6).fit(coords[:, 2:]).kneighbors(coords[:, 2:])
    assert (which[neighbours[:, 1:]] == which[:, None]).mean() > 0.8  # 3-D: neighbours share a cluster
    small = map_coordinates(W_dec[:10])  # too few for t-SNE: the PCA projection
    assert small.shape == (10, 5) and (small[:, :2] == small[:, 2:4]).all()


def test_tsne_fits_a_subset_places_the_rest_and_is_deterministic(monkeypatch):
    monkeypatch.setattr(featuremap, "TSNE_FIT_2D", 64)
    monkeypatch.setattr(featuremap, "TSNE_FIT_3D", 64)
    monkeypatch.setattr(featuremap, "map_method", lambda: "tsne")
    W_dec, which = _clustered(150, 3, 1)
    coords = map_coordinates(W_dec)
    assert np.isfinite(coords).all() and silhouette_score(coords[:, :2], which) > 0.5
    assert (map_coordinates(W_dec) == coords).all()


def test_layout_in_the_background_equals_the_map_and_neighbours_and_passes_errors_on(monkeypatch):
    """featuremap.Layout (started by the mine stage before its pass) gives exactly map_coordinates and
    nearest, computed in another thread meanwhile; an error there is raised by result()."""
    import threading

    import pytest

    monkeypatch.setattr(featuremap, "map_method", lambda: "tsne")
    W_dec, _ = _clustered(150, 3, 2)
    ran_in = []
    compute = featuremap.map_coordinates
    monkeypatch.setattr(featuremap, "map_coordinates",
                        lambda W: ran_in.append(threading.current_thread().name) or compute(W))
    coords, neighbours = featuremap.Layout(W_dec).result()
    assert ran_in == ["feature-map"]
    assert (coords == compute(W_dec)).all() and neighbours == featuremap.nearest(W_dec)
    monkeypatch.setattr(featuremap, "map_coordinates", lambda W: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        featuremap.Layout(W_dec).result()


def test_proposed_groups_lose_empty_names_and_repeats():
    import pytest

    from autointerp.errors import ProviderError
    from autointerp.taxonomy.stage import distinct_groups
    proposed = [("Speech ", "talk", []), ("", "nameless", []), ("speech", "again", []), ("  Music\n tones ", "m", [])]
    assert distinct_groups(proposed) == [("Speech", "talk", []), ("Music tones", "m", [])]
    with pytest.raises(ProviderError, match="only groups without names"):
        distinct_groups([(" ", "x", [])])
