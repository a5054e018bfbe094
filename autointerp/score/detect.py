"""The detection judge: a feature's held-out examples, shuffled, shown `per_prompt` at a time (split
evenly over requests) with the label to an LLM that rates each 0-10 for how likely the feature fires
on it. On audio corpora the judge also hears each example's clip when the model takes audio ([score]
audio; by default when the explainer heard audio for the label): one clip per numbered example, in
order, cut, encoded and capped as explain's clips (autointerp.explain.evidence.cut_clip)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from autointerp.config import Config
from autointerp.explain.evidence import clip_settings, cut_clip
from autointerp.llm.base import AudioPart, Model, Request
from autointerp.llm.client import CallResult
from autointerp.llm.prompts import Prompts
from autointerp.score.heldout import N_QUANTILES, HeldOut
from autointerp.score.metrics import DETECTION, auc, metrics
from autointerp.score.results import examples_detail, save
from autointerp.store.engine import Store
from autointerp.store.schema import Label

RATING_THRESHOLD = 5
"""A judge's rating (0-10) at or above which an example counts as predicted to activate."""


class Rating(BaseModel):
    item: int
    """The item's number in the list (1-based)."""
    rating: int
    """0: the feature surely does not fire on it; 10: it surely does."""


class Detection(BaseModel):
    """The judge's answer: a rating for every listed item."""
    ratings: list[Rating]


def breakdown(held: list[HeldOut], predicted: list[bool]) -> dict:
    """Recall per activation quantile (highest first) and false-positive rate per kind of negative."""
    def rate(picked: list[bool]) -> float | None:
        return round(sum(picked) / len(picked), 4) if picked else None
    return {"recall_by_quantile": [rate([p for h, p in zip(held, predicted) if h.quantile == q])
                                   for q in range(N_QUANTILES) if any(h.quantile == q for h in held)],
            "fpr_random": rate([p for h, p in zip(held, predicted) if h.kind == "random"]),
            "fpr_hard": rate([p for h, p in zip(held, predicted) if h.kind == "hard"])}


def chunks(items: list, size: int) -> list[list]:
    """`items` split into the fewest requests of at most `size`, as even as possible."""
    count = -(-len(items) // size)
    return [items[i * len(items) // count:(i + 1) * len(items) // count] for i in range(count)]


class Judge:
    """Builds a label's detection requests and reads the answers back as one rating per example."""

    def __init__(self, config: Config, prompts: Prompts, model: Model | None, audio_root: Path | None) -> None:
        self.config, self.prompts, self.root = config, prompts, audio_root
        self.settings = clip_settings(config)
        self.takes_audio = model is not None and model.takes_audio()

    def hears(self, label: Label) -> bool:
        """Whether the judge gets the clips for this label: [score] audio, else as its explainer did."""
        choice = self.config.score.audio
        if not self.takes_audio or choice is False:
            return False
        return choice is True or bool((label.evidence or {}).get("clips"))

    def requests(self, title: str | None, description: str | None, fid: int, held: list[HeldOut], hear: bool,
                 purpose: str = "score") -> list[Request]:
        return [self.request(title, description, fid, chunk, hear, purpose)
                for chunk in chunks(held, self.config.score.per_prompt)]

    def request(self, title: str | None, description: str | None, fid: int, chunk: list[HeldOut], hear: bool = False,
                purpose: str = "score") -> Request:
        audio: list[AudioPart] = []
        clip_of: list[int | None] = []
        budget = self.settings.max_bytes
        for number, example in enumerate(chunk, 1):
            clip = cut_clip(example, self.root, self.settings, f"Clip {len(audio) + 1} (item {number}):") \
                if hear and example.audio else None
            if clip is not None and len(clip.data) <= budget:
                budget -= len(clip.data)
                audio.append(clip)
                clip_of.append(len(audio))
            else:
                clip_of.append(None)
        prompt = self.prompts.render("detect", title=title, description=description, examples=chunk,
                                     threshold=RATING_THRESHOLD, clip_of=clip_of, clips=len(audio))
        llm = self.config.llm
        return Request(purpose=purpose, template=prompt.template, system=prompt.system, user=prompt.user,
                       schema=Detection, feature_id=fid, temperature=llm.temperature,
                       max_output_tokens=max(llm.max_output_tokens, 24 * len(chunk)), audio=tuple(audio))


def read(parts: list[list[HeldOut]], answers: list[CallResult]) -> tuple[list[int], int] | str:
    """(one rating per example in order, how many the judge left unrated: counted 0), or why the
    answers cannot be used."""
    ratings: list[int] = []
    unrated = 0
    for chunk, answer in zip(parts, answers):
        if answer.value is None:
            return f"judge failed: {answer.error}"
        given: dict[int, int] = {}
        for r in answer.value.ratings:
            if not 1 <= r.item <= len(chunk):
                return f"judge rated items outside 1-{len(chunk)}: item {r.item}"
            given[r.item] = max(given.get(r.item, 0), min(10, max(0, r.rating)))
        unrated += len(chunk) - len(given)
        ratings += [given.get(i + 1, 0) for i in range(len(chunk))]
    return ratings, unrated


def save_detection(store: Store, fid: int, provider: str, model_id: str, held: list[HeldOut], predicted: list[bool],
                   ratings: list[int] | None, extra: dict | None = None) -> bool:
    """Store a feature's detection score from the judge's predictions (and 0-10 ratings, if graded)."""
    truth = [h.activates for h in held]
    m = metrics(truth, predicted)
    details = examples_detail(held) | {"predicted": predicted} | breakdown(held, predicted) | (extra or {})
    if ratings is not None:
        details["ratings"] = ratings
    return save(store, fid, DETECTION, provider, model_id, details=details, balanced_accuracy=m.balanced_accuracy,
                precision=m.precision, recall=m.recall, f1=m.f1, n_pos=m.n_pos, n_neg=m.n_neg,
                auc=auc(truth, ratings) if ratings is not None else None)
