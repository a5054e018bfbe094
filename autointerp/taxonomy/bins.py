"""Bins: fine clusters of labels, a bin id and name per labeled feature (Majestrino's "bin" and
"bin_name"). k-means (scikit-learn) over the TF-IDF vectors of the labels (title counted twice, and
description), or over their sentence embeddings ([taxonomy] bin_by = "embedding"); k is
[taxonomy] n_bins, or about sqrt(labels). Each bin keeps its top TF-IDF terms; with an LLM provider
the LLM names the bins from their labels, BINS_PER_REQUEST at a time (prompts/bins_*.j2), and a bin
it leaves unnamed (or every bin, offline) is named by its top three terms."""

from __future__ import annotations

import math
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from autointerp.llm.base import Request
from autointerp.llm.batch import answer_groups
from autointerp.llm.client import LLMClient
from autointerp.llm.prompts import Prompts
from autointerp.store.schema import Label

BINS_PER_REQUEST = 20
TITLES_SHOWN = 12
"""Labels shown per bin when the LLM names it (the closest to the bin's centre)."""
MAX_NAME = 80
BOILERPLATE_SHARE = 0.5
"""A word in more than this share of the labels is not used for clustering or naming."""


class BinName(BaseModel):
    bin: int
    name: str


class BinNames(BaseModel):
    bins: list[BinName]


@dataclass
class Clustering:
    assignments: list[int]
    """The bin of each label, in the order given."""
    terms: list[list[str]]
    """Each bin's top TF-IDF terms, most characteristic first."""
    examples: list[list[int]]
    """Each bin's labels (indices into the labels given), closest to its centre first."""

    @property
    def sizes(self) -> list[int]:
        return [self.assignments.count(b) for b in range(len(self.terms))]


def label_text(label: Label) -> str:
    return f"{label.title}. {label.title}. {label.description or ''}"


def cluster(labels: list[Label], n_bins: int = 0, vectors: np.ndarray | None = None) -> Clustering:
    """k-means over the labels' TF-IDF vectors, or over `vectors` (one row per label) when given."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Words in most labels ("fires", "items") are boilerplate, not topics: left out from 10 labels on.
    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w-]+\b", min_df=1,
                                 max_df=BOILERPLATE_SHARE if len(labels) >= 10 else 1.0)
    try:
        tfidf = vectorizer.fit_transform([label_text(label) for label in labels])
    except ValueError:  # no words but stop words
        tfidf = None
    k = min(n_bins or max(1, round(math.sqrt(len(labels)))), len(labels))
    points = vectors if vectors is not None else tfidf
    if points is None or k <= 1:
        return Clustering([0] * len(labels), [["all labels"]], [list(range(len(labels)))])
    km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(points)
    assignments = km.labels_.tolist()
    distances = km.transform(points)
    terms_of = vectorizer.get_feature_names_out() if tfidf is not None else []
    terms, examples = [], []
    for b in range(k):
        members = [i for i, a in enumerate(assignments) if a == b]
        examples.append(sorted(members, key=lambda i: (distances[i, b], i)))
        if tfidf is None or not members:
            terms.append([])
            continue
        weights = np.asarray(tfidf[members].mean(axis=0)).ravel()
        terms.append([str(terms_of[i]) for i in weights.argsort()[::-1][:5] if weights[i] > 0])
    return Clustering(assignments, terms, examples)


def term_name(terms: list[str]) -> str:
    return ", ".join(terms[:3]).title() if terms else "Unnamed"


async def llm_names(clustering: Clustering, labels: list[Label], client: LLMClient, prompts: Prompts,
                    temperature: float, max_output_tokens: int) -> dict[int, str]:
    """Names the LLM gives the bins ({bin: name}); bins it leaves out or answers it fails are missing."""
    bins = [{"id": b, "size": len(members), "terms": clustering.terms[b],
             "titles": [labels[i].title for i in members[:TITLES_SHOWN]]}
            for b, members in enumerate(clustering.examples) if members]
    chunks = [bins[begin:begin + BINS_PER_REQUEST] for begin in range(0, len(bins), BINS_PER_REQUEST)]

    def requests():
        for i, batch in enumerate(chunks):
            prompt = prompts.render("bins", bins=batch)
            yield i, [Request(purpose="taxonomy", template=prompt.template, system=prompt.system, user=prompt.user,
                              schema=BinNames, temperature=temperature,
                              max_output_tokens=max(max_output_tokens, 30 * len(batch)))]
    found: dict[int, list[BinName]] = {}
    async with aclosing(answer_groups(client, requests(), BinNames)) as finished:  # live or batch jobs
        async for i, [answer] in finished:
            found[i] = answer.value.bins if answer.value else []
    names: dict[int, str] = {}
    for i in sorted(found):  # in request order, whatever order the answers came in
        wanted = {b["id"] for b in chunks[i]}
        for named in found[i]:
            name = " ".join(named.name.split())[:MAX_NAME]
            if named.bin in wanted and name:
                names.setdefault(named.bin, name)
    return names
