"""Mining on a Ray cluster: the shards of `mine --shard i/n` as Ray tasks (one GPU each where the cluster
has GPUs, one CPU otherwise), whose shard files, written to a folder every worker sees, `merge` then
combines exactly. A task whose worker dies is run again by Ray (max_retries) and resumes from the
shard's last checkpoint. The tasks report how far they have got to a small actor (Tally) that the
driver polls for its one progress line. Ray is an optional extra: pip install 'autointerp[ray]'.
The helpers here (connect, Tally, follow, claim) also serve `extract --ray` (autointerp.extract.cluster)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autointerp.config import Config
from autointerp.corpus.items import Corpus
from autointerp.errors import AutointerpError, ConfigError, InputError
from autointerp.mine.stage import Shard, mined_features, pick_device, run_pass, sync_sae
from autointerp.progress import Progress
from autointerp.sae import Encoder
from autointerp.store.engine import Store

MAX_RETRIES = 3
"""Times Ray runs a shard again after its worker died (a crash, kill -9, a lost node)."""
POLL_S = 0.5
"""How often the driver asks the tasks' Tally how far they have got."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("[cluster] engine = \"ray\" (mine --ray) needs Ray: pip install 'autointerp[ray]'") from None
    return ray


@contextmanager
def connect(config: Config) -> Iterator[Any]:
    """Ray, joined to the cluster of [cluster] address (else RAY_ADDRESS or a new local one) unless this
    process already is; left again at the end if joined here."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=config.cluster.address or None, log_to_driver=False, include_dashboard=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = config.cluster.address or os.environ.get("RAY_ADDRESS") or "a local cluster"
            reason = " ".join(str(exc).split())
            raise ConfigError(f"cannot start or join the Ray cluster at {where} ({reason}): check [cluster] address "
                              f"or --ray ADDRESS (e.g. 10.0.0.1:6379), and that `ray start` runs there") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def placement(ray: Any, config: Config) -> tuple[int, dict[str, float], str]:
    """(tasks, Ray resources of each, torch device of each): [cluster] shards, else one per GPU of the
    cluster (gpus_per_shard each), or one per CPU where it has none."""
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    count = config.cluster.shards or max(1, int(gpus // config.cluster.gpus_per_shard if gpus else resources.get("CPU", 1)))
    per_task = {"num_gpus": config.cluster.gpus_per_shard, "num_cpus": 1} if gpus else {"num_cpus": 1}
    return count, per_task, "cuda" if gpus else config.sae.device


class Tally:
    """A Ray actor: the furthest count each task has reported (rows mined, inputs extracted). A task run
    again after its worker died reports from where it resumed, so only the largest count is kept."""

    def __init__(self) -> None:
        self.reached: dict[int, int] = {}

    def report(self, key: int, count: int) -> None:
        self.reached[key] = max(self.reached.get(key, 0), count)

    def counts(self) -> dict[int, int]:
        return self.reached


def tally(ray: Any) -> Any:
    return ray.remote(num_cpus=0)(Tally).remote()


def follow(ray: Any, pending: dict[Any, int], totals: dict[int, int], bar: Progress, counter: Any) -> dict[int, Any]:
    """Wait for every task (pending: its ref -> its key in totals), moving the bar as the tasks report to
    `counter` (a Tally) between finishing; a finished task counts its whole total. Results by key."""
    results: dict[int, Any] = {}
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        for ref in finished:
            key = pending.pop(ref)
            results[key] = _get(ray, ref)
        counts = ray.get(counter.counts.remote())
        now = sum(total if key in results else min(counts.get(key, 0), total) for key, total in totals.items())
        if now > bar.done:
            bar.update(now - bar.done)
    return results


def claim(name: str, folder: Path) -> Path:
    """Write NAME.owner.json (host and pid: who works on it now) in the shared folder, which also proves
    that this worker can write there; refused in one line when it cannot."""
    owner = folder / f"{name}.owner.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        owner.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    except OSError as exc:
        raise InputError(f"a Ray worker on {socket.gethostname()} cannot write the shard folder {folder} "
                         f"({exc.strerror}): set [cluster] shared_dir to a folder every worker and this machine "
                         f"share (NFS, a cluster filesystem) and can write") from None
    return owner


def mine_shard(config_json: dict[str, Any], index: int, count: int, folder_name: str, device: str, counter: Any) -> int:
    """One Ray task: mine shard index/count into folder exactly as `mine --shard index/count` does (run
    on a worker; resumes from the shard's checkpoint when Ray runs it again). Returns its rows."""
    from autointerp.pipeline import Pipeline

    shard, folder = Shard(index, count), Path(folder_name)
    owner = claim(shard.path(folder).name.removesuffix(".safetensors"), folder)
    pipeline = Pipeline(Config.model_validate(config_json))
    encoder, corpus = pipeline.encoder(), pipeline.corpus()
    partial = shard.path(folder, partial=True)
    first = int(corpus.row_of(shard.items(len(corpus.items))[0]))
    acc = run_pass(encoder, corpus, pipeline.config.mine, pick_device(device), pipeline.config.corpus.nonfinite,
                   shard, partial, lambda row: counter.report.remote(index, row - first), windows=False)
    os.replace(partial, shard.path(folder))
    owner.unlink(missing_ok=True)
    return acc.rows


def mine_on_ray(store: Store, config: Config, encoder: Encoder, corpus: Corpus, folder: Path) -> bool:
    """Mine every shard not yet in `folder` as a Ray task and wait for all of them, with one progress
    line over the whole corpus, moved as the tasks report their rows. False when the database already
    holds every feature (nothing to do)."""
    if len(mined_features(store)) == encoder.d_sae:
        return False
    sync_sae(store, encoder, corpus, write=False)  # a different SAE or corpus is refused before any work
    with connect(config) as ray:
        count, per_task, device = placement(ray, config)
        task = ray.remote(max_retries=MAX_RETRIES, **per_task)(mine_shard)
        todo = [Shard(i, count) for i in range(count) if not Shard(i, count).path(folder).is_file()]
        rows = {shard.index: _rows(corpus, shard) for shard in todo}
        config_json, counter = config.model_dump(mode="json"), tally(ray)
        pending = {task.remote(config_json, s.index, s.count, str(folder), device, counter): s.index for s in todo}
        label = f"mine (ray: {count} shards, {len(todo)} to run{', GPU' if device == 'cuda' else ''})"
        with Progress(label, sum(rows.values()), "rows") as bar:
            follow(ray, pending, rows, bar, counter)
    return True


def _rows(corpus: Corpus, shard: Shard) -> int:
    first, stop = shard.items(len(corpus.items))
    return int(corpus.first_row[stop] - corpus.first_row[first])


def _get(ray: Any, ref: Any) -> Any:
    """A task's result; the project's own error raised in a task (a folder the worker cannot write, bad
    input) comes back as itself, one line; anything else names the task's failure in one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, AutointerpError):
            raise type(exc.cause)(str(exc.cause)) from None
        raise InputError(f"a Ray task failed ({type(exc.cause).__name__}: "
                         f"{' '.join(str(exc.cause).split())[:300]}): rerun with --debug, or `mine --shard i/n` on that shard") from None
    except ray.exceptions.RayError as exc:
        raise InputError(f"a Ray task was lost after {MAX_RETRIES} retries ({type(exc).__name__}): "
                         f"check the workers, then run the same command again (finished shards are kept)") from None
