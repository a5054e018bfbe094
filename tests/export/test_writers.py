"""Every export validated against its schema (the seed releases' formats, as pydantic models) and its
values checked against the database."""

import json
import math

import pytest
from pydantic import RootModel
from sqlalchemy import func, select

from autointerp.cli import main
from autointerp.explain.stage import explain
from autointerp.export.formats import Annotation, FeatureData, FeatureLabel, GroupName, Summary
from autointerp.export.writers import FILES, export
from autointerp.store.schema import SAE, Bin, Feature, Group, Label, LLMCall, Placement, Score
from autointerp.score.metrics import final_confidence
from autointerp.score.stage import score
from autointerp.taxonomy.stage import taxonomy
from tests.factory import run_mine


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def exported(planted, config, store, tmp_path):
    run_mine(config, store)
    explain(store, config, None)
    score(store, config, None)
    taxonomy(store, config, None)
    with store.session() as s:
        # An embedding score, and LLM calls with tokens and cost, as an LLM run would leave them.
        s.add(Score(feature_id=0, method="embedding", status="done", auc=0.93, n_pos=8, n_neg=12,
                    provider="embedding", model="all-MiniLM-L6-v2"))
        for purpose, status, cost in (("explain", "ok", 0.0125), ("score", "ok", 0.002), ("score", "invalid", 0.001)):
            s.add(LLMCall(provider="openai", model="gpt-4.1-mini", purpose=purpose, prompt_template=purpose,
                          prompt_hash="h", request_hash=f"{purpose}{status}", request={}, status=status,
                          input_tokens=1000, output_tokens=100, cost=cost))
    out = tmp_path / "export"
    paths = export(store, out)
    return out, paths


def test_every_export_matches_its_schema_and_the_database(exported, planted, store):
    out, paths = exported
    assert sorted(p.name for p in paths) == sorted(FILES) and not list(out.glob("*.tmp"))
    with store.session() as s:
        sae = s.scalars(select(SAE)).one()
        features = {f.id: f for f in s.scalars(select(Feature))}
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
        scores = {(sc.feature_id, sc.method): sc for sc in s.scalars(select(Score))}
        placements = {p.feature_id: p for p in s.scalars(select(Placement))}
        bins = {b.id: b.name for b in s.scalars(select(Bin))}
        groups = {g.id: g for g in s.scalars(select(Group))}
        tokens, cost = s.execute(select(func.sum(LLMCall.input_tokens + LLMCall.output_tokens), func.sum(LLMCall.cost))).one()

    annotations = {k: Annotation.model_validate(v) for k, v in _strict_json((out / "annotations.json").read_text()).items()}
    done = {f for f, l in labels.items() if l.status == "done"}
    assert set(annotations) == {str(f) for f in done}
    for key, a in annotations.items():
        label, placement = labels[int(key)], placements[int(key)]
        assert (a.title, a.description, a.reasoning) == (label.title, label.description, label.reasoning)
        # consistency: the explainer's rating, lowered to what detection supports (issue 14)
        score = scores.get((int(key), "detection"))
        ba = score.balanced_accuracy if score is not None and score.status == "done" else None
        expected = (label.confidence if ba is None else "low" if ba <= 0.5
                    else "medium" if label.confidence == "high" and ba < 0.8 else label.confidence)
        assert a.consistency == expected
        assert a.bin == placement.bin_id and a.bin_name == bins[a.bin]
    assert annotations["0"].title == "Color: red"

    assignments = RootModel[dict[str, list[int]]].model_validate(
        _strict_json((out / "group_assignments.json").read_text())).root
    assert assignments == {str(f): p.groups for f, p in placements.items() if p.groups}
    names = {int(k): GroupName.model_validate(v) for k, v in _strict_json((out / "groups.json").read_text()).items()}
    assert {g: n.name for g, n in names.items()} == {g: row.name for g, row in groups.items()}
    assert names[assignments["0"][0]].name == "Color"

    lines = [FeatureLabel.model_validate(_strict_json(line)) for line in (out / "feature_labels.jsonl").read_text().splitlines()]
    assert [row.feature for row in lines] == sorted(features)
    for row in lines:
        f = features[row.feature]
        assert row.confidence == final_confidence(f.dead, labels.get(f.id), scores.get((f.id, "detection")),
                                                  scores.get((f.id, "embedding")))
        assert row.autointerp == (labels[f.id].title if f.id in done else "")
    assert all(lines[f].confidence == "confident" for f in planted.truth)  # the planted labels validate
    assert all(lines[f].confidence == "dead" for f in planted.dead)

    data = FeatureData.model_validate(_strict_json((out / "feature_data.json").read_text()))
    assert [row.i for row in data.features] == sorted(features)
    for row in data.features:
        f = features[row.i]
        assert (row.x, row.y, row.x3, row.y3, row.z3) == (f.x, f.y, f.x3, f.y3, f.z3)
        assert (row.d, row.mx, row.mn, row.c) == (f.density, f.max_act, f.mean_act, f.fire_count)
    assert (data.meta["d_in"], data.meta["d_sae"], data.meta["k"]) == (sae.d_in, sae.d_sae, sae.k)

    summary = _strict_json((out / "summary.json").read_text())
    Summary.model_validate(summary)
    dead = sum(f.dead for f in features.values())
    assert (summary["d_in"], summary["d_sae"], summary["k"]) == (sae.d_in, sae.d_sae, sae.k)
    assert summary["features"] == {"total": len(features), "alive": len(features) - dead, "dead": dead,
                                   "dead_fraction": round(dead / len(features), 6)}
    assert summary["reconstruction"]["fve"] == sae.fve and summary["reconstruction"]["normalized_l2"] == sae.normalized_l2
    assert summary["labels"]["done"] == len(done)
    assert summary["labels"]["coverage"] == round(len(done) / (len(features) - dead), 6)
    detection = [sc.balanced_accuracy for (f, m), sc in scores.items() if m == "detection" and sc.status == "done"]
    dist = summary["scores"]["detection"]["balanced_accuracy"]
    assert dist["count"] == len(detection) == sum(dist["histogram"]["counts"])
    assert dist["mean"] == pytest.approx(sum(detection) / len(detection), abs=1e-4)
    assert summary["scores"]["detection"]["auc"] is None  # the offline judge answers yes/no
    assert summary["scores"]["embedding"]["auc"]["count"] == 1 and summary["scores"]["embedding"]["auc"]["max"] == 0.93
    assert summary["confidence"] == {c: n for c in ("confident", "tentative", "dead")
                                     if (n := sum(row.confidence == c for row in lines))}
    llm = summary["llm"]
    assert llm["input_tokens"] + llm["output_tokens"] == tokens and llm["cost_usd"] == pytest.approx(cost)
    assert llm["calls"] == 3 and llm["failed_calls"] == 1 and llm["by_purpose"]["score"]["calls"] == 2
    assert llm["models"] == ["openai:gpt-4.1-mini"]
    assert summary["taxonomy"]["bins"] == len(bins) and summary["taxonomy"]["placed"] == len(placements)


def test_non_finite_numbers_become_null_and_the_cli_exports(exported, planted, config, store, capsys):
    with store.session() as s:
        sae = s.scalars(select(SAE)).one()
        sae.fve = math.nan
        s.get(Feature, 0).mean_act = math.inf
    assert main(["export", str(planted.config)]) == 0
    out = config.output.dir / "export"
    summary = _strict_json((out / "summary.json").read_text())
    data = _strict_json((out / "feature_data.json").read_text())
    assert summary["reconstruction"]["fve"] is None and data["features"][0]["mn"] is None
    assert "export: 6 done" in capsys.readouterr().err
