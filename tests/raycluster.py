"""A real local Ray cluster for the tests (a head and a second worker node process on 127.0.0.1), and the
mined tables to compare a run on it with one in a single process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                     "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), saved["PYTHONPATH"]]))  # workers import autointerp
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"  # workers that extract never reach the hub
    # one thread in the workers and in this process (main() reads it): a model's sums may round differently
    # on another thread count, and the tests compare a run on the cluster with one here bit for bit
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)  # a second node process: the shards run on two nodes
    c.wait_for_nodes()
    yield c
    c.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def rows(db: Path) -> dict[str, list]:
    """The mined tables of a SQLite database, in a stable order."""
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        out = {name: conn.execute(text(sql)).fetchall() for name, sql in {
            "features": "SELECT * FROM features ORDER BY id",
            "examples": "SELECT feature_id, kind, rank, activation, item_id, position, start, \"end\", trace_start, "
                        "trace FROM examples ORDER BY 1, 2, 3",
            "saes": "SELECT d_in, d_sae, corpus_rows, fve, normalized_l2, reconstruction_rows, skipped_rows FROM saes",
            "items": "SELECT * FROM items ORDER BY id"}.items()}
    engine.dispose()
    return out
