"""A second try for weak labels ([explain] refine_below, balanced accuracy; 0 turns it off).

A label whose detection score is below the threshold gets one more explain call (prompts/refine_*.j2):
the usual evidence plus the label, up to half (at most SHOW_MAX) of the held-out examples the judge
missed and of the negatives it wrongly picked, with their clips where the explainer hears audio. The
new label is judged on the held-out examples NOT shown (fresh), and kept only if its balanced accuracy
there is higher than the first label's on the same examples (known from the first judgement, so no
call is spent on it). A kept label replaces the labels row and its fresh score the scores row; the
refinements row keeps both labels and both scores either way. Runs after detection in the score
stage; a feature with a done refinements row is never tried again, a failed one is retried."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from sqlalchemy import select

from autointerp.config import Config
from autointerp.explain.answers import trim_title
from autointerp.explain.evidence import Evidence, Explanation, Retry, uses_clips
from autointerp.explain.stage import tag_stats
from autointerp.llm.base import Model
from autointerp.llm.batch import answer_groups
from autointerp.llm.client import CallResult, LLMClient
from autointerp.llm.prompts import Prompts
from autointerp.progress import Progress
from autointerp.score.detect import RATING_THRESHOLD, Detection, Judge, chunks, read, save_detection
from autointerp.score.heldout import HeldOut
from autointerp.score.metrics import DETECTION, metrics
from autointerp.score.results import load_held_out, unscorable
from autointerp.stage import StageResult
from autointerp.store.engine import Store
from autointerp.store.schema import Label, Refinement, Score
from autointerp.store.views import corpus_info

SHOW_MAX = 5
"""Most missed (and most wrongly picked) examples shown to the explainer; the rest stay fresh."""


@dataclass
class Plan:
    label: Label
    held: list[HeldOut]
    retry: Retry
    fresh: list[HeldOut]
    first_score: float
    first_fresh_score: float
    hear: bool


def weak(store: Store, config: Config) -> list[int]:
    """Features whose label scored below refine_below and has no finished second try."""
    subset = config.feature_subset()
    with store.session() as s:
        tried = select(Refinement.feature_id).where(Refinement.status == "done")
        ids = [fid for fid in s.scalars(select(Score.feature_id).where(
            Score.method == DETECTION, Score.status == "done", Score.balanced_accuracy < config.explain.refine_below,
            Score.feature_id.not_in(tried)).order_by(Score.feature_id)) if subset is None or fid in subset]
    return ids[:config.select.limit] if config.select.limit else ids


def plan(store: Store, fid: int, window: tuple[int, int], judge: Judge) -> Plan | str:
    """What the second try shows and where it is judged, or why there can be none."""
    label, held = load_held_out(store, fid, *window)
    with store.session() as s:
        row = s.get(Score, (fid, DETECTION))
        first, details = row.balanced_accuracy, dict(row.details or {})
    predicted = details.get("predicted") or []
    if details.get("items") != [h.item_id for h in held] or len(predicted) != len(held):
        return "the held-out examples changed since the label was scored: run with --redo score"
    missed = [h for h, p in zip(held, predicted) if h.activates and not p]
    picked = [h for h, p in zip(held, predicted) if not h.activates and p]
    shown_missed = missed[:min(SHOW_MAX, (len(missed) + 1) // 2)]
    shown_picked = picked[:min(SHOW_MAX, (len(picked) + 1) // 2)]
    shown = {h.item_id for h in shown_missed + shown_picked}
    fresh = [(h, p) for h, p in zip(held, predicted) if h.item_id not in shown]
    if (why := unscorable([h for h, _ in fresh])) is not None:
        return f"no fresh examples left to judge a second label on: {why}"
    before = metrics([h.activates for h, _ in fresh], [p for _, p in fresh]).balanced_accuracy
    return Plan(label, held, Retry(label.title or "", label.description or "", shown_missed, shown_picked),
                [h for h, _ in fresh], first, before, judge.hears(label))


async def refine(store: Store, config: Config, client: LLMClient, prompts: Prompts,
                 window: tuple[int, int]) -> StageResult:
    """Second tries for every weak label (see the module doc), through the score stage's client."""
    result = StageResult("refine")
    todo = weak(store, config)
    if not todo:
        return result
    model = client.model
    with store.session() as s:
        info = corpus_info(s)
    evidence = Evidence(store, config, prompts, tag_stats(store), uses_clips(config, model), info)
    judge = Judge(config, prompts, model, info.audio_root)
    plans: dict[int, Plan] = {}
    spent: dict[int, tuple[int, int, float]] = {}
    labels: dict[int, tuple[Explanation, CallResult]] = {}
    kept = 0

    def pay(fid: int, answers: list[CallResult]) -> None:
        fresh = [a for a in answers if not a.cached]
        tokens_in, tokens_out, cost = spent.get(fid, (0, 0, 0.0))
        spent[fid] = (tokens_in + sum(a.input_tokens for a in fresh), tokens_out + sum(a.output_tokens for a in fresh),
                      cost + sum(a.cost for a in fresh))
        result.tokens += sum(a.input_tokens + a.output_tokens for a in fresh)
        result.cost += sum(a.cost for a in fresh)

    def fail(fid: int, error: str) -> None:
        p = plans.get(fid)
        tokens_in, tokens_out, cost = spent.get(fid, (0, 0, 0.0))
        with store.session() as s:
            s.merge(Refinement(feature_id=fid, status="failed", error=error, provider=model.provider, model=model.model_id,
                               first_title=p.label.title if p else None, input_tokens=tokens_in,
                               output_tokens=tokens_out, cost=cost))
        result.failed += 1

    mode = " batch" if config.llm.batch else ""
    with Progress(f"refine ({model.provider}:{model.model_id}{mode})", len(todo), "features") as bar:
        for fid in todo:
            found = plan(store, fid, window, judge)
            if isinstance(found, str):
                fail(fid, found)
                bar.update()
            else:
                plans[fid] = found
        asked = ((fid, [evidence.request(fid, p.retry)]) for fid, p in plans.items())
        async with aclosing(answer_groups(client, asked, Explanation)) as finished:
            async for fid, (answer,) in finished:
                pay(fid, [answer])
                if answer.value is None or not answer.value.title.strip():
                    fail(fid, f"second explain call failed: {answer.error or 'the answer has an empty title'}")
                    bar.update()
                else:
                    labels[fid] = answer.value, answer
        judged = ((fid, judge.requests(trim_title(value.title, config.explain.max_title_words)[0],
                                       value.description, fid, plans[fid].fresh, plans[fid].hear, "refine"))
                  for fid, (value, _) in labels.items())
        async with aclosing(answer_groups(client, judged, Detection)) as finished:
            async for fid, answers in finished:
                pay(fid, answers)
                ratings = read(chunks(plans[fid].fresh, config.score.per_prompt), answers)
                if isinstance(ratings, str):
                    fail(fid, f"judging the second label: {ratings}")
                else:
                    kept += _land(store, config, model, evidence.retry_hash, fid, plans[fid], *labels[fid],
                                  ratings[0], spent[fid])
                    result.done += 1
                bar.update(tokens=sum(spent[fid][:2]), cost=spent[fid][2])
    result.note = f"refined {result.done} weak labels, kept {kept}" + (f", {result.failed} failed" if result.failed else "")
    return result


def _land(store: Store, config: Config, model: Model, template_hash: str, fid: int, p: Plan, value: Explanation,
          answer: CallResult, ratings: list[int], spent: tuple[int, int, float]) -> bool:
    """Store both labels and scores; a better second label replaces the first (and its score)."""
    predicted = [r >= RATING_THRESHOLD for r in ratings]
    after = metrics([h.activates for h in p.fresh], predicted).balanced_accuracy
    better = after > p.first_fresh_score
    title, _ = trim_title(value.title, config.explain.max_title_words)
    details = {"missed": [h.item_id for h in p.retry.missed], "picked": [h.item_id for h in p.retry.picked],
               "fresh": [h.item_id for h in p.fresh], "ratings": ratings}
    with store.session() as s:
        s.merge(Refinement(feature_id=fid, status="done", error=None, first_title=p.label.title,
                           first_description=p.label.description, first_score=p.first_score,
                           first_fresh_score=p.first_fresh_score, title=title, description=value.description.strip(),
                           confidence=value.confidence, reasoning=value.reasoning.strip(), score=after, kept=better,
                           details=details, provider=model.provider, model=model.model_id, input_tokens=spent[0],
                           output_tokens=spent[1], cost=spent[2]))
        if better:
            row = s.get(Label, fid)
            row.title, row.description, row.confidence = title, value.description.strip(), value.confidence
            row.reasoning, row.raw_response = value.reasoning.strip(), answer.text
            row.prompt_template, row.prompt_hash = "refine", template_hash
            row.evidence = dict(row.evidence or {}) | {"refined_from": {"title": p.label.title,
                                                                        "description": p.label.description}}
    if better:
        save_detection(store, fid, model.provider, model.model_id, p.fresh, predicted, ratings,
                       {"refined": True, "requests": len(chunks(p.fresh, config.score.per_prompt))})
    return better
