import json

from sqlalchemy import select

from autointerp.config import GroupConfig
from autointerp.explain import explain
from autointerp.export import export
from autointerp.llm.mock import MockModel
from autointerp.schema import Bin, Feature, Group, Label, Placement
from autointerp.score import score
from autointerp.taxonomy import taxonomy
from tests.test_mine import run_mine


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


def test_llm_group_assignment_in_batches(planted, config, store):
    run_mine(config, store)
    config.taxonomy.groups = [GroupConfig(name="Colors", description="hues"), GroupConfig(name="Shapes")]
    config.taxonomy.batch_size = 4
    model = MockModel()
    explain(store, config, model)
    with store.session() as s:
        labeled = sorted(s.scalars(select(Label.feature_id).where(Label.status == "done")))
    answers = []
    for begin in range(0, len(labeled), 4):
        batch = labeled[begin:begin + 4]
        # group 7 does not exist and the last feature of the first batch is left out
        answers.append({"assignments": [{"feature": f, "groups": [1, 2, 7, 1]} for f in batch[: 3 if begin == 0 else 4]]})
    for answer in answers:
        model.enqueue(answer)
    taxonomy(store, config, model)
    with store.session() as s:
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
    assert placements[labeled[3]].status == "failed" and "left this feature out" in placements[labeled[3]].error
    assert all(placements[f].groups == [1, 2] for f in labeled if f != labeled[3])
    requests = [r for r in model.history if r.purpose == "taxonomy"]
    assert len(requests) == -(-len(labeled) // 4)
    assert "1. Colors: hues" in requests[0].user


def test_exports_follow_the_seed_schemas(planted, config, store, tmp_path):
    run_mine(config, store)
    explain(store, config, None)
    score(store, config, None)
    taxonomy(store, config, None)
    out = tmp_path / "export"
    export(store, out)
    with store.session() as s:
        features = {f.id: f for f in s.scalars(select(Feature))}
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
    annotations = json.loads((out / "annotations.json").read_text())
    assert set(annotations) == {str(f) for f, l in labels.items() if l.status == "done"}
    first = annotations["0"]
    assert set(first) == {"bin", "bin_name", "title", "description", "consistency", "reasoning"}
    assert first["title"] == "Color: red" and isinstance(first["bin"], int)
    groups = json.loads((out / "group_assignments.json").read_text())
    names = json.loads((out / "groups.json").read_text())
    assert names[str(groups["0"][0])]["name"] == "Color"
    lines = [json.loads(line) for line in (out / "feature_labels.jsonl").read_text().splitlines()]
    assert [row["feature"] for row in lines] == sorted(features)
    assert all(set(row) == {"feature", "interp", "autointerp", "confidence"} for row in lines)
    assert {row["confidence"] for row in lines} <= {"confident", "tentative", "dead"}
    assert all(row["confidence"] == "dead" for row in lines if features[row["feature"]].dead)
    data = json.loads((out / "feature_data.json").read_text())
    row = data["features"][0]
    assert set(row) == {"i", "x", "y", "x3", "y3", "z3", "d", "mx", "mn", "c"}
    assert row["c"] == features[0].fire_count and row["mx"] == features[0].max_act
    assert data["meta"]["d_sae"] == len(features)
