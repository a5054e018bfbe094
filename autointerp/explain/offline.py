"""The offline labeler: names a feature, without any LLM, by the corpus tag values most enriched
among its top examples against the rest of the corpus (hypergeometric test), and states the rule's
precision (share of top examples carrying the tags) and recall (share of all items carrying the
tags that are among the top examples). Its rule doubles as the offline detection judge."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from scipy.stats import hypergeom

ALPHA = 0.01
"""A tag rule must be enriched at least this significantly to become a label."""
PAIR_GAIN = 100.0
"""A two-tag rule replaces the best single tag only when it is this many times more significant."""

Rule = tuple[tuple[str, str], ...]


@dataclass
class TagStats:
    """How many corpus items carry each tag value (and each pair of values), for enrichment tests."""
    n_items: int
    counts: Counter
    pairs: Counter
    keys_of_value: dict[str, set[str]]

    @classmethod
    def from_items(cls, tag_dicts: list[dict[str, str]]) -> "TagStats":
        counts: Counter = Counter()
        pairs: Counter = Counter()
        keys_of_value: dict[str, set[str]] = {}
        for tags in tag_dicts:
            values = sorted(tags.items())
            counts.update(values)
            pairs.update(combinations(values, 2))
            for key, value in values:
                keys_of_value.setdefault(value, set()).add(key)
        return cls(len(tag_dicts), counts, pairs, keys_of_value)

    def prevalence(self, rule: Rule) -> int:
        return self.counts[rule[0]] if len(rule) == 1 else self.pairs[tuple(sorted(rule))]


@dataclass
class Finding:
    rule: Rule
    hits: int
    shown: int
    in_corpus: int
    p_value: float

    @property
    def precision(self) -> float:
        return self.hits / self.shown

    def as_dict(self) -> dict:
        return {"rule": [list(pair) for pair in self.rule], "hits": self.hits, "shown": self.shown,
                "in_corpus": self.in_corpus, "precision": round(self.precision, 4),
                "p_value": self.p_value}


def matches(rule: Rule | list, tags: dict[str, str]) -> bool:
    return all(tags.get(key) == value for key, value in rule)


def findings(top_tags: list[dict[str, str]], stats: TagStats) -> list[Finding]:
    """Every single tag value and pair of values seen among the top examples, most significant first."""
    shown = len(top_tags)
    seen: Counter = Counter()
    for tags in top_tags:
        values = sorted(tags.items())
        seen.update((v,) for v in values)
        seen.update(combinations(values, 2))
    out = []
    for rule, hits in seen.items():
        in_corpus = stats.prevalence(rule)
        p = float(hypergeom.sf(hits - 1, stats.n_items, in_corpus, shown))
        out.append(Finding(rule, hits, shown, in_corpus, p))
    out.sort(key=lambda f: (f.p_value, -f.precision, len(f.rule), f.rule))
    return out


def title_of(rule: Rule, stats: TagStats) -> str:
    """"French · voice: male". A value names itself when it is a phrase or a proper noun used by one tag
    column ("French", "440 Hz tone"); a bare lowercase word keeps its column name ("pitch: high")."""
    def word(key: str, value: str) -> str:
        speaks_for_itself = len(stats.keys_of_value.get(value, ())) <= 1 and (" " in value.strip() or value[:1].isupper())
        return value if speaks_for_itself else f"{key}: {value}"
    return " · ".join(word(key, value) for key, value in rule)


@dataclass
class OfflineLabel:
    title: str
    description: str
    confidence: str
    reasoning: str
    evidence: dict


def label(top_tags: list[dict[str, str]], stats: TagStats, fire_count: int) -> OfflineLabel | str:
    """The label for a feature that fires on `fire_count` rows and whose top examples carry `top_tags`,
    or the reason there is none. Recall is estimated as precision x fire_count / items carrying the tags."""
    if not top_tags:
        return "no top examples to read tags from"
    ranked = [f for f in findings(top_tags, stats) if f.precision >= 0.5]
    if not ranked or ranked[0].p_value > ALPHA:
        best = f" (best: {title_of(ranked[0].rule, stats)}, p={ranked[0].p_value:.2g})" if ranked else ""
        return f"no corpus tag is enriched among the top examples{best}"
    singles = [f for f in ranked if len(f.rule) == 1]
    best = singles[0] if singles and singles[0].p_value <= ALPHA else ranked[0]
    if len(ranked[0].rule) == 2 and ranked[0].p_value * PAIR_GAIN < best.p_value:
        best = ranked[0]
    ranked = [best] + [f for f in ranked if f is not best]
    conditions = " and ".join(f"{key}={value}" for key, value in best.rule)
    recall = min(1.0, best.precision * fire_count / best.in_corpus) if best.in_corpus else 0.0
    description = (f"Fires on items tagged {conditions}: {best.hits} of the top {best.shown} examples carry "
                   f"{'these tags' if len(best.rule) > 1 else 'this tag'} (precision {best.precision:.2f}); "
                   f"firing on {fire_count} items, it covers an estimated {recall:.0%} of the "
                   f"{best.in_corpus} such items in the corpus (recall {recall:.2f}).")
    if best.precision >= 0.9 and best.p_value < 1e-4:
        confidence = "high"
    elif best.precision >= 0.7:
        confidence = "medium"
    else:
        confidence = "low"
    reasoning = "Most enriched tag rules among the top examples (hypergeometric p against the rest of the corpus): " + "; ".join(
        f"{title_of(f.rule, stats)}: {f.hits}/{f.shown}, p={f.p_value:.2g}" for f in ranked[:4]) + "."
    evidence = best.as_dict() | {"recall": round(recall, 4), "fire_count": fire_count,
                                 "alternatives": [f.as_dict() for f in ranked[1:4]]}
    title = title_of(best.rule, stats)
    return OfflineLabel(title[:1].upper() + title[1:], description, confidence, reasoning, evidence)
