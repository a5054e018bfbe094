"""atlas.data on the hand-built atlas database: the index rows, map points, groups and summary agree
with the rows that were written."""

import pytest

from autointerp.atlas.data import grouped, index_data, iter_details, load_atlas, map_data, summary
from tests.atlas.atlas_db import CONFIDENT, DEAD, LIVE, N_FEATURES, PLACEMENTS, SCORES, TITLES, build_db


@pytest.fixture(scope="module")
def atlas_store(tmp_path_factory):
    store, _ = build_db(tmp_path_factory.mktemp("data"))
    yield store
    store.close()


def test_index_rows_follow_the_database(atlas_store):
    atlas = load_atlas(atlas_store)
    data = index_data(atlas)
    rows = {row[0]: dict(zip(data["fields"], row)) for row in data["rows"]}
    assert sorted(rows) == list(range(N_FEATURES))
    for fid, row in rows.items():
        assert row["status"] == ("dead" if fid in DEAD else "done" if fid in TITLES else row["status"])
        if fid in TITLES:
            assert row["title"] == TITLES[fid] and row["score"] == SCORES[fid]
        assert row["confidence"] == ("dead" if fid in DEAD else "confident" if fid in CONFIDENT else "tentative")
        assert row["groups"] == (sorted(PLACEMENTS[fid]) if fid in PLACEMENTS else [])


def test_map_groups_and_summary(atlas_store):
    atlas = load_atlas(atlas_store)
    points = map_data(atlas)["points"]
    assert {p[0] for p in points} <= set(LIVE)
    sections = grouped(atlas)
    assert sections[-1]["name"] == "Ungrouped"
    members = {s["id"]: s["count"] for s in sections}
    for gid in (1, 2, 3):
        assert members[gid] == sum(gid in groups for groups in PLACEMENTS.values())
    s = summary(atlas)
    assert (s["n_features"], s["dead"], s["labeled"]) == (N_FEATURES, len(DEAD), len(TITLES))
    assert s["llm_calls"] == 1 and s["llm_input_tokens"] == 900


def test_details_stream_top_then_bottom_examples(atlas_store):
    details = list(iter_details(atlas_store, LIVE, chunk=3))
    assert [d.id for d in details] == LIVE
    for d in details:
        kinds = [e.kind for e in d.examples]
        assert kinds == sorted(kinds, key=lambda k: k != "top") and "bottom" in kinds
        assert all(e.rank == i for i, e in enumerate(d.of_kind("top")))
