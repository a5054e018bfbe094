"""Bins: labels on clearly separate topics fall into separate bins, named by their top terms; every
label lands in exactly one bin; degenerate inputs give one bin."""

from autointerp.store.schema import Label
from autointerp.taxonomy.bins import cluster, term_name

TOPICS = {
    "laughter": ["Laughter bursts", "Giggling laughter", "Loud laughter", "Laughter in crowds"],
    "french": ["French speech", "Spoken French words", "French sentences", "Fast French speech"],
    "sirens": ["Police sirens", "Ambulance sirens", "Distant sirens", "Sirens wailing"],
}


def _labels():
    return [Label(feature_id=i, status="done", title=title, description=f"Items with {title.lower()}")
            for i, title in enumerate(t for titles in TOPICS.values() for t in titles)]


def test_separate_topics_make_separate_bins():
    labels = _labels()
    result = cluster(labels, n_bins=3)
    assert sorted(result.sizes) == [4, 4, 4] and len(result.assignments) == len(labels)
    groups = [result.assignments[i:i + 4] for i in range(0, 12, 4)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 3
    for topic, group in zip(TOPICS, groups):
        assert topic in result.terms[group[0]]  # the topic word is among the bin's top terms
    assert all(sorted(result.examples[b]) == [i for i, a in enumerate(result.assignments) if a == b] for b in range(3))


def test_degenerate_inputs_give_one_bin():
    one = cluster(_labels()[:1])
    assert one.assignments == [0] and one.sizes == [1]
    stop_words = cluster([Label(feature_id=i, status="done", title="the", description="and") for i in range(3)], 2)
    assert stop_words.assignments == [0, 0, 0] and stop_words.terms == [["all labels"]]


def test_term_name():
    assert term_name(["laughter", "giggling", "crowds", "loud"]) == "Laughter, Giggling, Crowds"
    assert term_name([]) == "Unnamed"
