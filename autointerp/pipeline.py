"""The stages in order, each reading its input from the database and writing its output there.

The order, what `--redo` forgets and what `status` counts follow from each stage's declaration
(autointerp.stage.Stage); the stages themselves live in their packages."""

from __future__ import annotations


from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from autointerp import __version__
from autointerp.config import Config
from autointerp.corpus.items import Corpus, load_corpus
from autointerp.errors import AutointerpError, ConfigError, warn
from autointerp.llm.base import Model
from autointerp.progress import Step
from autointerp.sae import Encoder, load_sae
from autointerp.stage import BaseStage, Context, Stage, StageResult, downstream
from autointerp.store.engine import Store
from autointerp.store.schema import Example, Feature, Run, utcnow


class MineStage(BaseStage):
    """Encode the corpus through the SAE: feature statistics and examples (autointerp.mine)."""
    name = "mine"
    writes = (Example, Feature)
    """The SAE and item rows stay: they are checked, not redone (a different SAE needs a new database)."""
    results = Feature

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def run(self, store: Store, context: Context) -> StageResult:
        from autointerp.mine.stage import Shard, merge_shards, mine, sync_sae, write
        p = self.pipeline
        merge = self.name == "merge"
        if not merge and p.shard is None and p.config.cluster.engine == "ray":
            from autointerp.mine.cluster import mine_on_ray
            merge = mine_on_ray(store, p.config, p.encoder(), p.corpus(), p.shard_dir)  # True: every shard file written
        if merge:
            acc = p.merged() if self.name == "merge" else merge_shards(p.shard_dir, p.encoder(), p.corpus(), p.config.mine)
            sync_sae(store, p.encoder(), p.corpus())
            result = write(store, acc, p.encoder(), p.corpus(), p.config.mine, torch.device("cpu"))
        else:
            shard = Shard.parse(p.shard) if p.shard else None
            result = mine(store, p.encoder(), p.corpus(), p.config.mine, p.config.sae.device,
                          p.config.corpus.nonfinite, shard, p.shard_dir)
            if shard is not None:
                return StageResult("mine", note=f"shard {p.shard}: {result.rows} rows, saved in {p.shard_dir}; "
                                                f"run `merge` when every shard is done")
        skipped = f", {result.skipped} rows with NaN/Inf skipped" if result.skipped else ""
        return StageResult(self.name, done=result.written, note=(
            f"{result.features} features, {result.dead} dead, {result.rows} rows, FVE {result.fve:.4f}{skipped}"))


class MergeStage(MineStage):
    """`merge`: the mine stage's output, from the shard files of `mine --shard i/n` runs."""
    name = "merge"


def stages(pipeline: Pipeline) -> dict[str, Stage]:
    """Every stage by name, in run order (merge stands in for mine)."""
    from autointerp.atlas.pages import ReportStage
    from autointerp.explain.stage import ExplainStage
    from autointerp.export.writers import ExportStage
    from autointerp.score.stage import ScoreStage
    from autointerp.taxonomy.stage import TaxonomyStage

    found: list[Stage] = [MineStage(pipeline), MergeStage(pipeline), ExplainStage(), ScoreStage(), TaxonomyStage(),
                          ReportStage(), ExportStage()]
    return {stage.name: stage for stage in found}


RUN_ORDER = ("mine", "explain", "score", "taxonomy", "report", "export")


@dataclass
class Pipeline:
    config: Config
    store: Store | None = None
    """Opened by the caller after check(), so that bad input never creates or touches a database."""
    _encoder: Encoder | None = field(default=None, repr=False)
    _corpus: Corpus | None = field(default=None, repr=False)
    _merged: object | None = field(default=None, repr=False)
    shard: str | None = None
    """`mine --shard i/n`: mine only that part of the corpus into a shard file (see `merge`)."""

    @property
    def atlas_dir(self) -> Path:
        return self.config.output.dir / "atlas"

    @property
    def shard_dir(self) -> Path:
        return self.config.cluster.shared_dir or self.config.output.dir / "shards"

    @property
    def export_dir(self) -> Path:
        return self.config.output.dir / "export"

    def context(self) -> Context:
        return Context(self.config, self.model, self.config.output.dir, self.shard)

    def encoder(self) -> Encoder:
        if self._encoder is None:
            sae = self.config.sae
            with Step(f"loading the SAE checkpoint {sae.path.name}"):
                self._encoder = load_sae(sae.path, sae.format, layer=sae.layer, trust_pickle=sae.trust_pickle,
                                         precision=sae.precision)
        return self._encoder

    def corpus(self) -> Corpus:
        if self._corpus is None:
            d_in = self.encoder().d_in
            with Step(f"reading the corpus ({self.config.corpus.items.name} and its vectors)"):
                self._corpus = load_corpus(self.config.corpus, d_in)
        return self._corpus

    def merged(self):
        """`merge`: the shard files combined, read once (by check(), before any database is opened)."""
        if self._merged is None:
            from autointerp.mine.shards import merge_shards
            self._merged = merge_shards(self.shard_dir, self.encoder(), self.corpus(), self.config.mine)
        return self._merged

    def model(self) -> Model | None:
        """A fresh LLM for one stage (each stage runs its own event loop and closes its model at the
        end); None for the offline labeler."""
        if self.config.llm.provider == "offline":
            return None
        from autointerp.llm import make_model
        return make_model(self.config.llm)

    def redo(self, stage: str) -> None:
        """Forget a stage's output, and what was derived from it, so the next run does it again: its rows
        go with the first write of the new results, in the same transaction (autointerp.store.deferred),
        so a run that stops before that leaves them as they were."""
        registry = stages(self)
        order = [registry[name] for name in ("mine", *RUN_ORDER[1:])]
        if stage == "merge":
            stage = "mine"
        self.store.defer_deletes(table for forgotten in downstream(order, stage) for table in forgotten.writes)
        registry[stage].forget(self.context())

    def run_stage(self, stage: str) -> StageResult:
        registry = stages(self)
        if stage not in registry:
            raise ValueError(stage)
        return registry[stage].run(self.store, self.context())

    def check(self, stages_: list[str]) -> None:
        """Load what the stages will need (checkpoint, corpus, LLM key and model, prompts) so that bad
        input fails now, before the database is opened or written, not after an hour of mining."""
        if {"mine", "merge"} & set(stages_):
            from autointerp.mine.stage import Shard, pick_device
            if self.shard:
                Shard.parse(self.shard)
            elif self.config.cluster.engine == "ray":
                from autointerp.mine.cluster import require_ray
                require_ray()
            if pick_device(self.config.sae.device).type == "cpu" and self.config.sae.precision != "float32":
                warn(f"[sae] precision = {self.config.sae.precision!r} on the CPU is far slower than float32 (CPUs "
                     f"lack fast half-precision matmuls): it is meant for GPUs")
            self.corpus()
            from autointerp.mine.write import check_selection
            check_selection(self.config.feature_subset(), self.encoder().d_sae)
            if "merge" in stages_:
                self.merged()  # a shard file that cannot be used is refused before the database exists
        if "score" in stages_ and "embedding" in self.config.score.methods:
            from autointerp.score.embedding import unavailable
            if (why := unavailable(self.config.score.embedding_model)) is not None:
                raise ConfigError(why)
        if {"explain", "score", "taxonomy"} & set(stages_):
            self.model()
            self.context().prompts()

    def run(self, command: str, stages_: list[str], redo: list[str], report=print) -> list[StageResult]:
        from autointerp.mine.write import check_run
        check_run(self.store, self.config, redo)  # the corpus is the one mined; --features inside the SAE
        registry = stages(self)
        context = self.context()
        from autointerp.mine.checkpoint import disk_space
        with disk_space(f"the database {self.store.url}"), self.store.session() as s:
            run = Run(command=command, config=self.config.model_dump(mode="json"), version=__version__)
            s.add(run)
        results = []
        try:
            # every check that needs the database (templates rendered on a sample feature) runs before
            # anything is forgotten, so a refused --redo leaves the database as it was
            for name in dict.fromkeys([*stages_, *(s.name for r in redo
                                                   for s in downstream(list(registry.values()), r))]):
                registry[name].check(self.store, context)
            for name in redo:
                self.redo(name)
            for name in stages_:
                result = self._run_stage(registry[name], context)
                report(result.summary())
                results.append(result)
        except BaseException as exc:
            try:
                if results or not isinstance(exc, AutointerpError):
                    self._finish(run.id, "failed" if isinstance(exc, Exception) else "interrupted", str(exc) or type(exc).__name__)
                else:  # refused input before any stage finished: leave the database as it was
                    with self.store.session() as s:
                        s.execute(delete(Run).where(Run.id == run.id))
            except SQLAlchemyError:
                pass  # the disk is full (say): the error that stopped the run is the one to report
            raise
        with disk_space(f"the database {self.store.url}"):
            self._finish(run.id, "done", None)
        return results

    def _run_stage(self, stage: Stage, context: Context) -> StageResult:
        """Run one stage; running out of disk space (or past a file-size limit) while it writes its files
        is one line, and the half-written *.tmp files of the atlas and exports are removed."""
        from autointerp.mine.checkpoint import disk_space
        target = {"report": self.atlas_dir, "export": self.export_dir}.get(stage.name)
        if target is None:
            return stage.run(self.store, context)
        try:
            with disk_space(target):
                return stage.run(self.store, context)
        except AutointerpError:
            for tmp in target.rglob("*.tmp"):
                tmp.unlink(missing_ok=True)
            raise

    def _finish(self, run_id: int, status: str, error: str | None) -> None:
        """Record how the run ended; a finished run also settles --redo's deletes that no new result
        carried (a redone stage that had nothing to write)."""
        with self.store.session(settle=status == "done") as s:
            row = s.get(Run, run_id)
            row.status, row.error, row.finished_at = status, error, utcnow()
