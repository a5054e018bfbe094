from math import comb

import pytest
from sqlalchemy import select

from autointerp.explain import offline
from autointerp.explain.stage import explain
from autointerp.store.schema import Label
from tests.factory import run_mine


def hypergeom_tail(hits, population, successes, draws):
    total = comb(population, draws)
    return sum(comb(successes, i) * comb(population - successes, draws - i)
               for i in range(hits, min(successes, draws) + 1)) / total


def test_p_values_match_the_exact_hypergeometric_tail():
    items = [{"lang": "fr" if i < 30 else "en", "voice": "f" if i % 2 else "m"} for i in range(200)]
    stats = offline.TagStats.from_items(items)
    top = items[:8] + items[100:102]  # 8 French, 2 English
    found = {f.rule: f for f in offline.findings(top, stats)}
    fr = found[(("lang", "fr"),)]
    assert (fr.hits, fr.shown, fr.in_corpus) == (8, 10, 30)
    assert fr.p_value == pytest.approx(hypergeom_tail(8, 200, 30, 10), rel=1e-9)
    pair = found[(("lang", "fr"), ("voice", "f"))]
    assert pair.in_corpus == 15 and pair.hits == 4


def test_labels_name_the_planted_tags(planted, config, store):
    run_mine(config, store)
    explain(store, config, None)
    with store.session() as s:
        labels = {l.feature_id: l for l in s.scalars(select(Label))}
    for feature, (key, value) in planted.truth.items():
        label = labels[feature]
        assert label.status == "done" and label.provider == "offline"
        assert label.title == f"{key.capitalize()}: {value}"
        assert label.evidence["rule"] == [[key, value]]
        assert label.evidence["precision"] == 1.0
        assert f"{key}={value}" in label.description


def test_no_enriched_tag_is_a_failure_not_a_label():
    items = [{"lang": "fr" if i % 2 else "en"} for i in range(100)]
    stats = offline.TagStats.from_items(items)
    result = offline.label(items[:10], stats, fire_count=50)
    assert isinstance(result, str) and "no corpus tag is enriched" in result


def test_titles_keep_the_column_name_unless_the_value_speaks_for_itself():
    stats = offline.TagStats.from_items([{"speed": "Normal", "pitch": "Normal", "lang": "French", "sound": "pink noise",
                                          "voice": "male"}])
    assert offline.title_of((("speed", "Normal"), ("lang", "French")), stats) == "speed: Normal · French"
    assert offline.title_of((("sound", "pink noise"), ("voice", "male")), stats) == "pink noise · voice: male"
