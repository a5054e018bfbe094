"""The second try for weak labels on the planted fixture (bench/refine.py): the features whose first
label was planted wrong are refined, judged on fresh examples and improved; the others are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from autointerp.store.engine import Store
from autointerp.store.schema import Label, LLMCall, Refinement
from bench.refine import run
from tests.factory import planted_corpus


@pytest.mark.parametrize("batch", [False, True])
def test_refinement_fixes_the_planted_wrong_labels_only(tmp_path, batch):
    figures = run(tmp_path / "corpus", batch=batch)
    wrong = set(figures["planted_wrong"])
    assert set(figures["refined"]) == wrong and set(figures["improved"]) == wrong
    assert all(figures["after"][f] > figures["before"][f] for f in wrong)
    assert all(figures["after"][f] == figures["before"][f] for f in figures["before"] if f not in wrong)
    assert figures["mean_after"] > figures["mean_before"] + 0.3
    # every weak feature cost one explain call and its judge calls, under purpose "refine"
    assert figures["extra_calls"] >= 2 * len(wrong) and figures["extra_tokens"] > 0
    truth = planted_corpus(tmp_path / "again").truth
    store = Store(f"sqlite:///{tmp_path / 'corpus' / 'out' / 'autointerp.db'}")
    try:
        with store.session() as s:
            labels = {r.feature_id: r for r in s.scalars(select(Label))}
            tries = {r.feature_id: r for r in s.scalars(select(Refinement))}
            refine_calls = s.scalars(select(LLMCall).where(LLMCall.purpose == "refine")).all()
            asked = [c.request["user"] for c in refine_calls]
    finally:
        store.close()
    for f in wrong:  # both labels stay: the first in refinements, the kept one in labels
        key, value = truth[f]
        assert labels[f].title == f"{key.title()}: {value}" and labels[f].prompt_template == "refine"
        assert tries[f].first_title != labels[f].title and tries[f].kept and tries[f].score > tries[f].first_fresh_score
        shown = set(tries[f].details["missed"]) | set(tries[f].details["picked"])
        assert shown and not shown & set(tries[f].details["fresh"])  # judged on examples it was not shown
    assert any("Earlier label:" in text and "earlier label missed" in text for text in asked)
    assert all((c.batch_id is not None) == batch for c in refine_calls)
