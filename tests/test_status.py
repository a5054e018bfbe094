"""`status` counts what each stage declares, checked against plain SQL on the same database."""

import sqlite3

from autointerp.cli import main
from autointerp.pipeline import RUN_ORDER, Pipeline, stages
from autointerp.status import render_status, stage_counts
from autointerp.store.engine import Store


def test_status_matches_plain_sql(planted, config, capsys):
    assert main(["run", str(planted.config), "--llm", "mock", "--features", "0-9"]) == 0
    con = sqlite3.connect(config.db_url.removeprefix("sqlite:///"))
    q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    d_sae = q("SELECT d_sae FROM saes")
    live = q("SELECT count(*) FROM features WHERE dead = 0")
    labels = q("SELECT count(*) FROM labels WHERE status = 'done'")
    expected = {
        "mine": (q("SELECT count(*) FROM features"), 0, d_sae - q("SELECT count(*) FROM features")),
        "explain": (labels, q("SELECT count(*) FROM labels WHERE status = 'failed'"),
                    live - q("SELECT count(*) FROM labels")),
        "score": (q("SELECT count(*) FROM scores WHERE method = 'detection' AND status = 'done'"),
                  q("SELECT count(*) FROM scores WHERE method = 'detection' AND status = 'failed'"),
                  labels - q("SELECT count(*) FROM scores WHERE method = 'detection'")),
        "taxonomy": (q("SELECT count(*) FROM placements WHERE status = 'done'"),
                     q("SELECT count(*) FROM placements WHERE status = 'failed'"),
                     labels - q("SELECT count(*) FROM placements")),
    }
    calls, cost = q("SELECT count(*) FROM llm_calls"), q("SELECT coalesce(sum(cost), 0) FROM llm_calls")
    con.close()
    assert expected["explain"][2] > 0  # features 10+ are left: the counts are not trivially complete
    store = Store(config.db_url)
    try:
        registry = stages(Pipeline(config))
        rows, totals = stage_counts(store, [registry[name] for name in RUN_ORDER])
        assert {r.stage: (r.done, r.failed, r.left) for r in rows} == expected
        assert totals["llm_calls"] == calls and abs(totals["cost"] - cost) < 1e-12
        text = render_status(store, [registry[name] for name in RUN_ORDER])
    finally:
        store.close()
    capsys.readouterr()
    assert main(["status", str(planted.config)]) == 0
    assert capsys.readouterr().out.strip() == text
