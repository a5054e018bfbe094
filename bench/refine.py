"""Refinement on a planted fixture ([explain] refine_below): prints the figures; not part of the tests.

    python bench/refine.py

The planted corpus (tests.factory: items tagged color x shape, one SAE feature per tag value) is mined;
a mock explainer names a feature by the tag most common among its top examples, except on every
second planted feature, where it first names a wrong value of the same tag (a known share of wrong
labels); shown its misses it names the tag most common among them. The mock judge rates an item 9
when its tags hold the label's "Tag: value", else 0. Printed: features refined and improved, mean
balanced accuracy before and after, and the extra calls and tokens the second tries cost."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select  # noqa: E402

from autointerp.config import load_config  # noqa: E402
from autointerp.explain.stage import explain  # noqa: E402
from autointerp.llm.base import Completion, Request  # noqa: E402
from autointerp.llm.mock import MockModel  # noqa: E402
from autointerp.score.stage import score  # noqa: E402
from autointerp.store.engine import Store  # noqa: E402
from autointerp.store.schema import LLMCall, Refinement, Score  # noqa: E402
from tests.factory import COLORS, SHAPES, planted_corpus, run_mine  # noqa: E402

VALUES = {"color": COLORS, "shape": SHAPES}


def _tags(lines: str) -> list[tuple[str, str]]:
    return [tuple(pair.split("=", 1)) for found in re.findall(r"\| tags: (.*)$", lines, re.M)
            for pair in found.split(", ")]  # type: ignore[misc]


class PlantedLLM(MockModel):
    """Wrong first on the features in `wrong`, right when shown its misses; judges by tags."""

    def __init__(self, wrong: set[int]) -> None:
        super().__init__("planted")
        self.wrong = wrong

    async def _execute(self, request: Request, structured="json_schema") -> Completion:
        self.history.append(request)
        if "ratings" in request.schema.model_fields:
            key, value = re.search(r"Feature description: (\w+): (\w+)", request.user).groups()
            items = request.user.split("Items:", 1)[1]
            ratings = [{"item": int(n), "rating": 9 if f"{key.lower()}={value}" in tags else 0}
                       for n, tags in re.findall(r"^(\d+)\. .*?\| tags: (.*)$", items, re.M)]
            answer = {"ratings": ratings}
        else:
            if request.purpose == "refine":
                section = request.user.split("Items the earlier label missed", 1)[1].split("wrongly predicted")[0]
            else:
                section = request.user.split("Top-activating items:", 1)[1].split("Contrast items")[0]
            (key, value), _ = Counter(_tags(section)).most_common(1)[0]
            if request.purpose == "explain" and request.feature_id in self.wrong:
                values = VALUES[key]
                value = values[(values.index(value) + 1) % len(values)]
            answer = {"reasoning": "planted", "title": f"{key.title()}: {value}",
                      "description": f"items tagged {key} {value}", "confidence": "high"}
        text = json.dumps(answer)
        return Completion(text=text, input_tokens=request.estimated_tokens(), output_tokens=len(text) // 4)


def run(root: Path, refine_below: float = 0.7, batch: bool = False) -> dict:
    planted = planted_corpus(root)
    config = load_config(planted.config)
    features = sorted(planted.truth)
    config.select.features = f"{features[0]}-{features[-1]}"
    config.explain.refine_below = refine_below
    config.llm.batch, config.llm.batch_poll_s = batch, 0.01
    wrong = set(features[::2])
    store = Store(config.db_url)
    try:
        run_mine(config, store)
        model = PlantedLLM(wrong)
        explain(store, config, model)
        score(store, config, model)
        with store.session() as s:
            scores = {r.feature_id: r.balanced_accuracy for r in s.scalars(select(Score))}
            tries = {r.feature_id: r for r in s.scalars(select(Refinement))}
            extra = s.execute(select(func.count(), func.sum(LLMCall.input_tokens), func.sum(LLMCall.output_tokens))
                              .where(LLMCall.purpose == "refine")).one()
            first = s.execute(select(func.count(), func.sum(LLMCall.input_tokens), func.sum(LLMCall.output_tokens))
                              .where(LLMCall.purpose.in_(("explain", "score")))).one()
    finally:
        store.close()
    before = {f: tries[f].first_score if f in tries else scores[f] for f in features}
    return {"features": len(features), "planted_wrong": sorted(wrong), "refined": sorted(tries),
            "improved": sorted(f for f, t in tries.items() if t.kept), "before": before, "after": scores,
            "mean_before": sum(before.values()) / len(features), "mean_after": sum(scores.values()) / len(features),
            "extra_calls": extra[0], "extra_tokens": int((extra[1] or 0) + (extra[2] or 0)),
            "first_pass_calls": first[0], "first_pass_tokens": int((first[1] or 0) + (first[2] or 0))}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        f = run(Path(tmp) / "corpus")
    print(f"planted features: {f['features']}, planted wrong first: {len(f['planted_wrong'])} {f['planted_wrong']}")
    print(f"refined: {len(f['refined'])} {f['refined']}; improved (kept): {len(f['improved'])} "
          f"= {len(f['improved']) / f['features']:.0%} of features")
    print(f"mean balanced accuracy: before {f['mean_before']:.3f}, after {f['mean_after']:.3f}")
    print(f"extra calls: {f['extra_calls']} ({f['extra_tokens']:,} tokens) on top of {f['first_pass_calls']} "
          f"explain + score calls ({f['first_pass_tokens']:,} tokens)")


if __name__ == "__main__":
    main()
