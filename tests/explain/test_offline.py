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


def test_free_text_columns_are_not_tags_but_a_shared_value_is_evidence():
    # 200 items: a 2-valued tag, and a gloss with 40 distinct values (5 items each): free text
    items = [{"lang": "fr" if i % 2 else "en", "gloss": f"sentence {i % 40}"} for i in range(200)]
    stats = offline.TagStats.from_items(items)
    assert stats.free_text == {"gloss"}
    top = [items[i] for i in (0, 40, 80, 120, 3, 5, 7, 9)]  # 4 share "sentence 0", 4 are French
    found = {f.rule: f for f in offline.findings(top, stats)}
    assert not any(len(rule) == 2 and "gloss" in dict(rule) for rule in found)  # free text never pairs
    shared = found[(("gloss", "sentence 0"),)]
    assert (shared.hits, shared.in_corpus) == (4, 5)
    assert shared.p_value == pytest.approx(hypergeom_tail(4, 200, 5, 8), rel=1e-9)
    assert (("gloss", "sentence 3"),) not in found  # seen once: not evidence
    result = offline.label(top, stats, fire_count=8)
    assert result.title == "“sentence 0” (gloss)"


def test_a_pair_wins_only_when_far_more_significant():
    # 300 items; whispered: items 0-19, of which 0-11 are male; male also on every other later item
    items = [{"style": "whispered" if i < 20 else "normal",
              "voice": "male" if i < 12 or (i >= 20 and i % 2 == 0) else "female"} for i in range(300)]
    stats = offline.TagStats.from_items(items)
    assert stats.prevalence((("style", "whispered"), ("voice", "male"))) == 12
    # all 5 top examples are whispered men: the pair covers every whispered example, 19.6x more significant
    top = [items[i] for i in (0, 1, 2, 3, 4)]
    p_single, p_pair = hypergeom_tail(5, 300, 20, 5), hypergeom_tail(5, 300, 12, 5)
    assert offline.PAIR_GAIN < p_single / p_pair < offline.PARTIAL_PAIR_GAIN
    result = offline.label(top, stats, fire_count=12)
    assert result.evidence["rule"] == [["style", "whispered"], ["voice", "male"]]
    assert result.evidence["p_value"] == pytest.approx(p_pair, rel=1e-9)
    # 4 whispered men and a whispered woman: the pair covers fewer examples and is not 100x better
    top2 = [items[i] for i in (0, 1, 2, 3, 15)]
    p_single2, p_pair2 = hypergeom_tail(5, 300, 20, 5), hypergeom_tail(4, 300, 12, 5)
    assert p_single2 / p_pair2 < offline.PARTIAL_PAIR_GAIN
    assert offline.label(top2, stats, fire_count=12).evidence["rule"] == [["style", "whispered"]]


def test_titles_already_taken_are_told_apart():
    # whispered: items 0-39; lang fr on even items; the top 10 are whispered, 9 of them French
    items = [{"style": "whispered" if i < 40 else "normal", "lang": "fr" if i % 2 == 0 else "en"} for i in range(200)]
    stats = offline.TagStats.from_items(items)
    top = [items[i] for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 1)]
    # the pair lang fr · whispered (9/10) is not 100x more significant than whispered (10/10): whispered names it
    assert hypergeom_tail(10, 200, 40, 10) / hypergeom_tail(9, 200, 20, 10) < offline.PARTIAL_PAIR_GAIN
    assert hypergeom_tail(9, 200, 100, 10) <= offline.ALPHA  # French alone is enriched: a qualifier
    first = offline.label(top, stats, fire_count=10, activations=[1.0] * 10, taken=set())
    assert first.title == "Style: whispered"
    second = offline.label(top, stats, fire_count=10, activations=[2.0, 3.5], taken={first.title})
    assert second.title == "Style: whispered · mostly lang: fr"
    third = offline.label(top, stats, fire_count=10, activations=[2.0, 3.5], taken={first.title, second.title})
    assert third.title == "Style: whispered (activation 2–3.5)"


def test_confidence_is_never_high_for_a_rule_expected_at_chance():
    # the tag covers 20 of 400 items; the top 10 all carry it (p tiny, precision 1) ...
    items = [{"kind": "tone" if i < 20 else "speech"} for i in range(400)]
    stats = offline.TagStats.from_items(items)
    top = items[:10]
    precise = offline.label(top, stats, fire_count=20)
    assert precise.confidence == "high" and precise.evidence["expected_detection"] == pytest.approx(1.0)
    # ... but a feature firing on 380 items cannot be detected by it: at most 20 of 380 carry the tag
    broad = offline.label(top, stats, fire_count=380)
    expected = (20 / 380 + 1.0) / 2  # TPR 20/380, TNR 1 (no tagged item among the 20 silent ones)
    assert broad.evidence["expected_detection"] == pytest.approx(expected, abs=1e-4)
    assert broad.confidence == "low"
