"""The offline labeler: names a feature, without any LLM, by the corpus tag values most enriched
among its top examples against the rest of the corpus (hypergeometric test), and states the rule's
precision (share of top examples carrying the tags) and recall (share of all items carrying the
tags that are among the top examples). Its rule doubles as the offline detection judge.

Tag columns with many distinct values (a transcript, a gloss: free text, see `is_free_text`) are not
tags; a free-text value repeated among the top examples (one sentence said in several languages) may
still name a feature. Titles tell apart features that share a rule: `label` is given the titles
already taken and qualifies its own by the next most enriched tag of another column, or by the
activation range of the top examples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

from scipy.stats import hypergeom

ALPHA = 0.01
"""A tag rule must be enriched at least this significantly to become a label."""
PAIR_GAIN = 10.0
"""A two-tag rule that every top example carrying the best single tag also carries replaces it when it is
this many times more significant (whispered · male over whispered, when all whispered examples are male)."""
PARTIAL_PAIR_GAIN = 100.0
"""A two-tag rule carried by fewer top examples than the best single tag must be this many times more
significant to replace it."""
FREE_TEXT_VALUES = 12
"""A column with more distinct values than this and than the square root of the number of items carrying
it is free text (a transcript, a gloss: 21 values over 238 clips), not a tag (a language, a speaker)."""
FREE_TEXT_HITS = 3
"""A free-text value counts as evidence only when at least this many top examples share it."""

Rule = tuple[tuple[str, str], ...]


def is_free_text(values: Counter) -> bool:
    """Whether a column whose non-empty values occur with these counts is free text rather than a tag."""
    return len(values) > max(FREE_TEXT_VALUES, sum(values.values()) ** 0.5)


@dataclass
class TagStats:
    """How many corpus items carry each tag value (and each pair of values), for enrichment tests."""
    n_items: int
    counts: Counter
    pairs: Counter
    keys_of_value: dict[str, set[str]]
    free_text: set[str] = field(default_factory=set)
    """Columns that are free text: their values are never paired with tags, nor shown as tags."""

    @classmethod
    def from_items(cls, tag_dicts: list[dict[str, str]]) -> "TagStats":
        columns: dict[str, Counter] = {}
        for tags in tag_dicts:
            for key, value in tags.items():
                if value != "":
                    columns.setdefault(key, Counter())[value] += 1
        free = {key for key, values in columns.items() if is_free_text(values)}
        counts: Counter = Counter()
        pairs: Counter = Counter()
        keys_of_value: dict[str, set[str]] = {}
        for tags in tag_dicts:
            values = sorted((k, v) for k, v in tags.items() if v != "")
            counts.update(values)
            pairs.update(combinations([kv for kv in values if kv[0] not in free], 2))
            for key, value in values:
                keys_of_value.setdefault(value, set()).add(key)
        return cls(len(tag_dicts), counts, pairs, keys_of_value, free)

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
    """Every tag value and pair of tag values seen among the top examples, and every free-text value
    shared by at least FREE_TEXT_HITS of them, most significant first."""
    shown = len(top_tags)
    seen: Counter = Counter()
    for tags in top_tags:
        values = sorted((k, v) for k, v in tags.items() if v != "")
        plain = [kv for kv in values if kv[0] not in stats.free_text]
        seen.update((v,) for v in values)
        seen.update(combinations(plain, 2))
    out = []
    for rule, hits in seen.items():
        if len(rule) == 1 and rule[0][0] in stats.free_text and hits < FREE_TEXT_HITS:
            continue
        in_corpus = stats.prevalence(rule)
        p = float(hypergeom.sf(hits - 1, stats.n_items, in_corpus, shown))
        out.append(Finding(rule, hits, shown, in_corpus, p))
    out.sort(key=lambda f: (f.p_value, -f.precision, len(f.rule), f.rule))
    return out


def title_of(rule: Rule, stats: TagStats) -> str:
    """"French · voice: male". A value names itself when it is a phrase or a proper noun used by one tag
    column ("French", "440 Hz tone"); a bare lowercase word keeps its column name ("pitch: high"); a
    free-text value is quoted with its column ("“It is sunny.” (gloss)")."""
    def word(key: str, value: str) -> str:
        if key in stats.free_text:
            return f"“{value}” ({key})"
        speaks_for_itself = len(stats.keys_of_value.get(value, ())) <= 1 and (" " in value.strip() or value[:1].isupper())
        return value if speaks_for_itself else f"{key}: {value}"
    return " · ".join(word(key, value) for key, value in rule)


def detection_estimate(finding: Finding, fire_count: int, n_items: int) -> float:
    """The balanced accuracy the rule would reach as a detector of the items the feature fires on, if the
    top examples' precision held across all of them: the expected score of the offline judge."""
    if fire_count <= 0 or fire_count >= n_items:
        return 0.5
    hits = min(finding.in_corpus, finding.precision * fire_count)
    true_positive = hits / fire_count
    true_negative = 1.0 - (finding.in_corpus - hits) / (n_items - fire_count)
    return (true_positive + true_negative) / 2


def confidence_of(finding: Finding, detection: float) -> str:
    """high only for a precise, significant rule expected to detect well; low for one near chance."""
    if finding.precision >= 0.9 and finding.p_value < 1e-4 and detection >= 0.8:
        return "high"
    if finding.precision >= 0.7 and detection >= 0.65:
        return "medium"
    return "low"


@dataclass
class OfflineLabel:
    title: str
    description: str
    confidence: str
    reasoning: str
    evidence: dict


def _choose(ranked: list[Finding]) -> Finding:
    singles = [f for f in ranked if len(f.rule) == 1]
    best = singles[0] if singles and singles[0].p_value <= ALPHA else ranked[0]
    pair = ranked[0]
    if len(pair.rule) == 2 and best.rule[0] in pair.rule:
        gain = PAIR_GAIN if pair.hits >= best.hits else PARTIAL_PAIR_GAIN
        if pair.p_value * gain < best.p_value:
            best = pair
    elif len(pair.rule) == 2 and pair.p_value * PARTIAL_PAIR_GAIN < best.p_value:
        best = pair
    return best


def _titles(best: Finding, ranked: list[Finding], stats: TagStats, activations: list[float]) -> list[str]:
    """Candidate titles, plainest first: the rule; the rule and the next most enriched tag of another
    column ("mostly" when not all top examples carry it); the rule and the top examples' activation range."""
    base = title_of(best.rule, stats)
    out = [base]
    used = {key for key, _ in best.rule}
    for f in ranked:
        if len(f.rule) == 1 and f.rule[0][0] not in used and f.p_value <= ALPHA:
            out.append(f"{base} · {'' if f.hits == f.shown else 'mostly '}{title_of(f.rule, stats)}")
    if activations:
        out.append(f"{base} (activation {min(activations):.3g}–{max(activations):.3g})")
    return [t[:1].upper() + t[1:] for t in out]


def label(top_tags: list[dict[str, str]], stats: TagStats, fire_count: int, activations: list[float] | None = None,
          taken: set[str] | None = None) -> OfflineLabel | str:
    """The label for a feature that fires on `fire_count` rows and whose top examples carry `top_tags`
    (with these `activations`), or the reason there is none. The title is the plainest candidate not in
    `taken` (the titles of features labelled before). Recall is estimated as precision x fire_count /
    items carrying the tags."""
    if not top_tags:
        return "no top examples to read tags from"
    ranked = [f for f in findings(top_tags, stats) if f.precision >= 0.5]
    if not ranked or ranked[0].p_value > ALPHA:
        best = f" (best: {title_of(ranked[0].rule, stats)}, p={ranked[0].p_value:.2g})" if ranked else ""
        return f"no corpus tag is enriched among the top examples{best}"
    best = _choose(ranked)
    ranked = [best] + [f for f in ranked if f is not best]
    conditions = " and ".join(f"{key}={value}" for key, value in best.rule)
    recall = min(1.0, best.precision * fire_count / best.in_corpus) if best.in_corpus else 0.0
    detection = detection_estimate(best, fire_count, stats.n_items)
    description = (f"Fires on items tagged {conditions}: {best.hits} of the top {best.shown} examples carry "
                   f"{'these tags' if len(best.rule) > 1 else 'this tag'} (precision {best.precision:.2f}); "
                   f"firing on {fire_count} items, it covers an estimated {recall:.0%} of the "
                   f"{best.in_corpus} such items in the corpus (recall {recall:.2f}).")
    reasoning = "Most enriched tag rules among the top examples (hypergeometric p against the rest of the corpus): " + "; ".join(
        f"{title_of(f.rule, stats)}: {f.hits}/{f.shown}, p={f.p_value:.2g}" for f in ranked[:4]) + (
        f". As a detector of the {fire_count} items it fires on, the rule is expected to reach balanced "
        f"accuracy {detection:.2f} (0.5 is chance).")
    evidence = best.as_dict() | {"recall": round(recall, 4), "fire_count": fire_count,
                                 "expected_detection": round(detection, 4),
                                 "alternatives": [f.as_dict() for f in ranked[1:4]]}
    candidates = _titles(best, ranked, stats, activations or [])
    title = next((t for t in candidates if t not in (taken or set())), candidates[-1])
    return OfflineLabel(title, description, confidence_of(best, detection), reasoning, evidence)
