"""The stages in order, each reading its input from the database and writing its output there."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import delete

from autointerp import __version__
from autointerp.config import Config
from autointerp.errors import AutointerpError, ConfigError, warn
from autointerp.corpus.items import Corpus, load_corpus
from autointerp.llm.base import Model
from autointerp.sae import Encoder, load_sae
from autointerp.store.schema import Bin, Feature, Group, Label, Placement, Run, Score, utcnow
from autointerp.stage import StageResult
from autointerp.store.engine import Store

STAGES = ("mine", "explain", "score", "taxonomy", "report", "export")


@dataclass
class Pipeline:
    config: Config
    store: Store | None = None
    """Opened by the caller after check(), so that bad input never creates or touches a database."""
    _encoder: Encoder | None = field(default=None, repr=False)
    _corpus: Corpus | None = field(default=None, repr=False)
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

    def encoder(self) -> Encoder:
        if self._encoder is None:
            sae = self.config.sae
            self._encoder = load_sae(sae.path, sae.format, layer=sae.layer, trust_pickle=sae.trust_pickle,
                                     precision=sae.precision)
        return self._encoder

    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = load_corpus(self.config.corpus, self.encoder().d_in)
        return self._corpus

    def model(self) -> Model | None:
        """A fresh LLM for one stage (each stage runs its own event loop and closes its model at the
        end); None for the offline labeler."""
        if self.config.llm.provider == "offline":
            return None
        from autointerp.llm import make_model
        return make_model(self.config.llm)

    def redo(self, stage: str) -> None:
        """Forget a stage's output, and what was derived from it, so the next run does it again."""
        with self.store.session() as s:
            if stage in ("mine", "merge"):
                s.execute(delete(Placement))
                s.execute(delete(Bin))
                s.execute(delete(Score))
                s.execute(delete(Label))
                s.execute(delete(Feature))
            elif stage == "explain":
                s.execute(delete(Placement))
                s.execute(delete(Bin))
                s.execute(delete(Score))
                s.execute(delete(Label))
            elif stage == "score":
                s.execute(delete(Score))
            elif stage == "taxonomy":
                s.execute(delete(Placement))
                s.execute(delete(Bin))
                s.execute(delete(Group))
        if stage == "report" and self.atlas_dir.exists():
            shutil.rmtree(self.atlas_dir)

    def run_stage(self, stage: str) -> StageResult:
        if stage in ("mine", "merge"):
            from autointerp.mine.stage import Shard, merge_shards, mine, sync_sae, write
            if stage == "mine" and self.shard is None and self.config.cluster.engine == "ray":
                from autointerp.mine.cluster import mine_on_ray
                if mine_on_ray(self.store, self.config, self.encoder(), self.corpus(), self.shard_dir):
                    stage = "merge"  # every shard file is written: merge them as `merge` does
            if stage == "merge":
                acc = merge_shards(self.shard_dir, self.encoder(), self.corpus(), self.config.mine)
                sync_sae(self.store, self.encoder(), self.corpus())
                result = write(self.store, acc, self.encoder(), self.corpus(), self.config.mine, torch.device("cpu"))
            else:
                shard = Shard.parse(self.shard) if self.shard else None
                result = mine(self.store, self.encoder(), self.corpus(), self.config.mine, self.config.sae.device,
                              self.config.corpus.nonfinite, shard, self.shard_dir)
                if shard is not None:
                    return StageResult("mine", note=f"shard {self.shard}: {result.rows} rows, saved in {self.shard_dir}; "
                                                    f"run `merge` when every shard is done")
            skipped = f", {result.skipped} rows with NaN/Inf skipped" if result.skipped else ""
            return StageResult(stage, done=result.written, note=(
                f"{result.features} features, {result.dead} dead, {result.rows} rows, FVE {result.fve:.4f}{skipped}"))
        if stage == "explain":
            from autointerp.explain.stage import explain
            return explain(self.store, self.config, self.model())
        if stage == "score":
            from autointerp.score.stage import score
            return score(self.store, self.config, self.model())
        if stage == "taxonomy":
            from autointerp.taxonomy.stage import taxonomy
            return taxonomy(self.store, self.config, self.model())
        if stage == "report":
            from autointerp.atlas.pages import write_atlas
            audio_root = self.config.corpus.audio_root or self.config.corpus.items.parent
            atlas = write_atlas(self.store, self.atlas_dir, audio_root, self.config.output)
            return StageResult("report", done=atlas.pages_written, note=atlas.note())
        if stage == "export":
            from autointerp.export.writers import export
            files = export(self.store, self.export_dir)
            return StageResult("export", done=len(files), note=str(self.export_dir))
        raise ValueError(stage)

    def check(self, stages: list[str]) -> None:
        """Load what the stages will need (checkpoint, corpus, LLM key and model, prompts) so that bad
        input fails now, before the database is opened or written, not after an hour of mining."""
        if {"mine", "merge"} & set(stages):
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
        if "score" in stages and "embedding" in self.config.score.methods:
            from autointerp.score.embedding import unavailable
            if (why := unavailable(self.config.score.embedding_model)) is not None:
                raise ConfigError(why)
        if {"explain", "score", "taxonomy"} & set(stages):
            self.model()
            from autointerp.llm.prompts import Prompts
            Prompts(self.config.explain.prompts_dir)

    def run(self, command: str, stages: list[str], redo: list[str], report=print) -> list[StageResult]:
        with self.store.session() as s:
            run = Run(command=command, config=self.config.model_dump(mode="json"), version=__version__)
            s.add(run)
        results = []
        try:
            for stage in redo:
                self.redo(stage)
            for stage in stages:
                result = self.run_stage(stage)
                report(result.summary())
                results.append(result)
        except BaseException as exc:
            if results or not isinstance(exc, AutointerpError):
                self._finish(run.id, "failed" if isinstance(exc, Exception) else "interrupted", str(exc) or type(exc).__name__)
            else:  # refused input before any stage finished: leave the database as it was
                with self.store.session() as s:
                    s.execute(delete(Run).where(Run.id == run.id))
            raise
        self._finish(run.id, "done", None)
        return results

    def _finish(self, run_id: int, status: str, error: str | None) -> None:
        with self.store.session() as s:
            row = s.get(Run, run_id)
            row.status, row.error, row.finished_at = status, error, utcnow()

    def close(self) -> None:
        self.store.close()

