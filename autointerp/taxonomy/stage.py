"""The taxonomy stage: semantic groups and bins.

Groups come from the config ([[taxonomy.groups]], e.g. Majestrino's 14 in examples/majestrino_groups.toml),
or, when none are listed, the LLM proposes at most max_proposed_groups from a sample of the labels
spread over all features (offline: one group per tag column). Each labeled feature is assigned to at
most max_groups_per_feature groups by structured-output calls that carry batch_size features each;
the features an answer leaves out are asked about once more, together (offline: the group of its tag
rule's column). Batches are cut from all labels in feature order, so a killed and resumed run sends
the same requests as an uninterrupted one (answered from the call log) and ends with the same groups.
Bins (autointerp.taxonomy.bins) cluster the labels finer, and are named by the LLM when a provider is configured.

With [llm] batch every call (the proposal, the assignments in two rounds: first asks, then the
follow-ups for left-out features; the bin names) goes through the provider's batch API by
autointerp.llm.batch.answer_groups, under its never-twice rules: a run killed while a job is out
builds the same requests again and picks that job up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import aclosing

from pydantic import BaseModel
from sqlalchemy import delete, select

from autointerp.taxonomy import bins as binning
from autointerp.config import Config
from autointerp.errors import ConfigError, ProviderError
from autointerp.llm.base import Model, Request
from autointerp.llm.batch import answer_groups, answer_one
from autointerp.llm.client import CallResult, LLMClient
from autointerp.progress import Progress
from autointerp.llm.prompts import Prompts
from autointerp.store.schema import Bin, Group, Label, Placement
from autointerp.stage import BaseStage, Context, StageResult, delete_tables, pending
from autointerp.store.engine import Store


class Assignment(BaseModel):
    feature: int
    groups: list[int]


class GroupAnswer(BaseModel):
    assignments: list[Assignment]


class ProposedGroup(BaseModel):
    name: str
    description: str


class GroupProposal(BaseModel):
    groups: list[ProposedGroup]


class TaxonomyStage(BaseStage):
    name = "taxonomy"
    needs = ("explain",)
    writes = (Placement, Bin, Group)
    results = Placement

    def check(self, store: Store, context: Context) -> None:
        prompts = context.prompts()
        if context.config.llm.provider != "offline":  # its templates must render before anything is forgotten
            prompts.render("groups", groups=[], features=[], max_groups=context.config.taxonomy.max_groups_per_feature)

    def run(self, store: Store, context: Context) -> StageResult:
        return taxonomy(store, context.config, context.model(), context.prompts())


def _set_groups(store: Store, wanted: list[tuple[str, str, list[str]]]) -> None:
    """Make the groups table hold `wanted`; when that changes the groups, the stage's earlier output
    (placements, bins) is forgotten."""
    with store.session() as s:
        current = [(g.name, g.description, list(g.tags or [])) for g in s.scalars(select(Group).order_by(Group.id))]
        if current == wanted:
            return
        delete_tables(s, [TaxonomyStage()])
        s.add_all(Group(id=i, name=name, description=desc, tags=tags) for i, (name, desc, tags) in enumerate(wanted, 1))


def _labels(store: Store, ids: list[int] | None = None) -> list[Label]:
    with store.session() as s:
        query = select(Label).where(Label.status == "done").order_by(Label.feature_id)
        if ids is not None:
            query = query.where(Label.feature_id.in_(ids))
        return list(s.scalars(query))


PROPOSE_SAMPLE = 400
"""Labels shown to the LLM when it proposes groups: evenly spaced over all labeled features."""


async def _propose(store: Store, config: Config, client: LLMClient, prompts: Prompts) -> list[tuple[str, str, list[str]]]:
    labels = _labels(store)
    labels = [labels[i * len(labels) // PROPOSE_SAMPLE] for i in range(PROPOSE_SAMPLE)] if len(labels) > PROPOSE_SAMPLE else labels
    most = config.taxonomy.max_proposed_groups
    prompt = prompts.render("propose_groups", features=labels, min_groups=min(3, most), max_groups=most)
    answer = await answer_one(client, Request(purpose="taxonomy", template=prompt.template, system=prompt.system,
                                              user=prompt.user, schema=GroupProposal,
                                              max_output_tokens=config.llm.max_output_tokens), GroupProposal)
    if answer.value is None or not answer.value.groups:
        raise ProviderError(f"the LLM proposed no usable groups ({answer.error or 'empty list'}): "
                            f"list your groups under [[taxonomy.groups]] in the config")
    return distinct_groups([(g.name, g.description, []) for g in answer.value.groups])[:most]


def distinct_groups(proposed: list[tuple[str, str, list[str]]]) -> list[tuple[str, str, list[str]]]:
    """The proposed groups with names stripped, empty names dropped and a repeated name (ignoring case)
    kept once, first wins; refused when none is left."""
    seen: set[str] = set()
    out = []
    for name, description, tags in proposed:
        name = " ".join(name.split())
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            out.append((name, description.strip(), tags))
    if not out:
        raise ProviderError("the LLM proposed only groups without names: list your groups under "
                            "[[taxonomy.groups]] in the config")
    return out


def taxonomy(store: Store, config: Config, model: Model | None, prompts: Prompts | None = None) -> StageResult:
    return asyncio.run(_taxonomy(store, config, model, prompts or Prompts()))


async def _taxonomy(store: Store, config: Config, model: Model | None, prompts: Prompts) -> StageResult:
    result = StageResult("taxonomy")
    client = LLMClient(model, store, config.llm) if model is not None else None
    if model is not None and config.llm.batch and not model.supports_batch:
        raise ConfigError(f"provider {model.provider} has no batch mode: drop --batch / [llm] batch")
    try:
        if config.taxonomy.groups:
            _set_groups(store, [(g.name, g.description, list(g.tags)) for g in config.taxonomy.groups])
        else:
            with store.session() as s:
                have = s.scalars(select(Group)).first() is not None
            if not have and client is None:
                keys = sorted({key for label in _labels(store) for key, _ in (label.evidence or {}).get("rule", [])})
                _set_groups(store, [(key.replace("_", " ").title(), f"Features named by the {key!r} tag", [key]) for key in keys])
            elif not have:
                _set_groups(store, await _propose(store, config, client, prompts))
        with store.session() as s:
            groups = list(s.scalars(select(Group).order_by(Group.id)))
            todo = [fid for fid in pending(s, Placement, config.feature_subset(), config.select.limit)
                    if (label := s.get(Label, fid)) is not None and label.status == "done"]
        limit = config.taxonomy.max_groups_per_feature
        with Progress("taxonomy groups", len(todo), "features") as bar:
            if client is None:
                for label in _labels(store, todo):
                    keys = [key for key, _ in (label.evidence or {}).get("rule", [])]
                    chosen = [g.id for g in groups if set(g.tags or []) & set(keys)][:limit]
                    with store.session() as s:
                        s.merge(Placement(feature_id=label.feature_id, status="done", groups=chosen, error=None))
                    result.done += 1
                    bar.update()
            else:
                # Batches are cut from all labels in feature order, so a resumed or repeated run sends the
                # very requests the first one did (answered from the call log) and places alike.
                wanted = set(todo)
                labels, size = _labels(store), config.taxonomy.batch_size
                cut = (labels[begin:begin + size] for begin in range(0, len(labels), size))
                batches = [batch for batch in cut if any(label.feature_id in wanted for label in batch)]

                def placed(done: int, failed: int) -> None:
                    result.done += done
                    result.failed += failed
                    bar.update(done + failed)
                await _assign_all(store, config, client, prompts, groups, batches, wanted, placed)
        result.note = f"{await assign_bins(store, config, client, prompts)} bins"
    finally:
        if client is not None:
            result.tokens, result.cost = client.tokens, client.spent
            await client.aclose()
    return result


def _ask(config: Config, prompts: Prompts, groups: list[Group], batch: list[Label]) -> Request:
    """The request asking the LLM which groups the batch's features belong to."""
    prompt = prompts.render("groups", groups=groups, features=[
        {"id": label.feature_id, "title": label.title, "description": label.description} for label in batch],
        max_groups=config.taxonomy.max_groups_per_feature)
    return Request(purpose="taxonomy", template=prompt.template, system=prompt.system, user=prompt.user,
                   schema=GroupAnswer, temperature=config.llm.temperature,
                   max_output_tokens=max(config.llm.max_output_tokens, 40 * len(batch)))


def _given(answer: CallResult, batch: list[Label]) -> dict[int, list[int]]:
    """The groups an answer gives the batch's features ({feature: group ids})."""
    asked = {label.feature_id for label in batch}
    return {a.feature: a.groups for a in answer.value.assignments if a.feature in asked} if answer.value else {}


async def _assign_all(store: Store, config: Config, client: LLMClient, prompts: Prompts, groups: list[Group],
                      batches: list[list[Label]], wanted: set[int], placed: Callable[[int, int], None]) -> None:
    """Place the wanted features of every batch in two rounds of requests (each round through
    answer_groups: live, or one set of batch jobs): one request per batch, then one more for the
    features its answer left out. A batch is stored as soon as its last answer is in; a failed request
    marks its features failed with its error (the next run retries)."""
    first: dict[int, dict[int, list[int]]] = {}
    follow_ups: dict[int, list[Label]] = {}
    rounds = ((i, [_ask(config, prompts, groups, batch)]) for i, batch in enumerate(batches))
    async with aclosing(answer_groups(client, rounds, GroupAnswer)) as finished:
        async for i, [answer] in finished:
            given = _given(answer, batches[i])
            left = [label for label in batches[i] if label.feature_id not in given]
            if left and answer.error is None:
                first[i], follow_ups[i] = given, left
            else:
                placed(*_place(store, config, groups, batches[i], wanted, given,
                               answer.error or "the answer left this feature out, twice"))
    again = ((i, [_ask(config, prompts, groups, left)]) for i, left in follow_ups.items())
    async with aclosing(answer_groups(client, again, GroupAnswer)) as finished:
        async for i, [answer] in finished:
            given = first[i] | _given(answer, follow_ups[i])
            placed(*_place(store, config, groups, batches[i], wanted, given,
                           answer.error or "the answer left this feature out, twice"))


def _place(store: Store, config: Config, groups: list[Group], batch: list[Label], wanted: set[int],
           given: dict[int, list[int]], reason: str) -> tuple[int, int]:
    """Store the wanted features of a batch: their valid groups, or failed with `reason`."""
    valid = {g.id for g in groups}
    done = failed = 0
    with store.session() as s:
        for label in batch:
            if label.feature_id not in wanted:
                continue
            chosen = given.get(label.feature_id)
            if chosen is None:
                s.merge(Placement(feature_id=label.feature_id, status="failed", groups=[], error=reason))
                failed += 1
                continue
            kept = [g for g in dict.fromkeys(chosen) if g in valid][:config.taxonomy.max_groups_per_feature]
            s.merge(Placement(feature_id=label.feature_id, status="done", groups=kept, error=None))
            done += 1
    return done, failed


async def assign_bins(store: Store, config: Config, client: LLMClient | None = None,
                      prompts: Prompts | None = None) -> int:
    """Cluster all placed labels into bins when any placement lacks one (else keep the bins); name the
    bins with the LLM when a client is given and [taxonomy] name_bins is on. Returns the number of bins."""
    with store.session() as s:
        missing = s.scalars(select(Placement.feature_id).where(Placement.bin_id.is_(None))).first()
        count = len(s.scalars(select(Bin.id)).all())
        placed = set(s.scalars(select(Placement.feature_id)))
    if missing is None:
        return count
    labels = [label for label in _labels(store) if label.feature_id in placed]
    if not labels:
        return 0
    vectors = None
    if config.taxonomy.bin_by == "embedding":
        from autointerp.score.embedding import Embedder, label_text
        vectors = Embedder(config.score.embedding_model).encode([label_text(label) for label in labels])
    clustering = binning.cluster(labels, config.taxonomy.n_bins, vectors)
    names = {b: binning.term_name(terms) for b, terms in enumerate(clustering.terms)}
    if client is not None and prompts is not None and config.taxonomy.name_bins:
        names |= await binning.llm_names(clustering, labels, client, prompts, config.llm.temperature,
                                         config.llm.max_output_tokens)
    sizes = clustering.sizes
    with store.session() as s:
        for placement in s.scalars(select(Placement)):
            placement.bin_id = None
        s.flush()
        s.execute(delete(Bin))
        s.add_all(Bin(id=b, name=names[b], size=size, terms=clustering.terms[b]) for b, size in enumerate(sizes))
        s.flush()
        for label, b in zip(labels, clustering.assignments):
            s.get(Placement, label.feature_id).bin_id = b
    return len([n for n in sizes if n])
