"""The provider registry: names without imports, one module per built-in provider, make_model and the
key, price and config checks derived from it, the stages kept off the provider hook, and a third-party
provider installed from a package built here (entry point group autointerp.providers) running a stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError
from autointerp.llm import api_key, make_model, registry
from autointerp.llm.mock import MockModel
from autointerp.llm.pricing import merged_prices
from autointerp.llm.providers.gemini import GeminiModel
from autointerp.llm.providers.openai import OpenAIChatModel
from autointerp.store.schema import LLMCall
from autointerp.store.views import call_totals

REPO = Path(__file__).resolve().parents[2]


def test_built_in_providers_one_module_each():
    modules = sorted(p.stem for p in (REPO / "autointerp/llm/providers").glob("*.py") if not p.stem.startswith("_"))
    assert registry.names() == ["mock", *modules] and modules == ["gemini", "openai"]
    assert registry.choices()[0] == "offline"
    for name, cls in (("mock", MockModel), ("openai", OpenAIChatModel), ("gemini", GeminiModel)):
        provider = registry.get(name)
        assert provider.name == name and cls.provider == name and provider.batch == cls.supports_batch
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("openai"))


def test_make_model_keys_and_prices_come_from_the_registry(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the GEMINI_API_KEY environment variable"):
        make_model(LLMConfig(provider="gemini", model="gemini-2.5-flash"))
    monkeypatch.setenv("MY_KEY", "k-0123456789")
    assert api_key(LLMConfig(provider="gemini", model="g", api_key_env="MY_KEY")) == "k-0123456789"
    assert api_key(LLMConfig(provider="mock")) == ""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert isinstance(make_model(LLMConfig(provider="openai", model="m", base_url="http://127.0.0.1:9/v1")),
                      OpenAIChatModel)  # a local server needs no key
    with pytest.raises(ConfigError, match=r"\[llm\] model is required for provider 'openai'"):
        make_model(LLMConfig(provider="openai"))
    with pytest.raises(ConfigError, match="has no LLM model"):
        make_model(LLMConfig(provider="offline"))
    table = merged_prices({"mine": [1.0, 2.0]})
    for name in ("openai", "gemini"):
        assert registry.get(name).prices and all(table[m] == p for m, p in registry.get(name).prices.items())
    assert table["mine"] == [1.0, 2.0]


def test_stages_never_call_the_provider_hook():
    """Only autointerp/llm reaches a Model's hook or its batch methods; stages go through LLMClient."""
    hook = re.compile(r"\._execute\(|\.(submit_batch|poll_batch|find_batch|batch_results)\(")
    outside = [f"{path.relative_to(REPO)}:{n}" for path in (REPO / "autointerp").rglob("*.py")
               if "llm" not in path.relative_to(REPO / "autointerp").parts[:1]
               for n, line in enumerate(path.read_text().splitlines(), 1) if hook.search(line)]
    assert outside == []


def test_call_totals_sum_per_stage(store):
    common = dict(provider="mock", model="m", feature_id=1, prompt_template="t", prompt_hash="p", request={})
    with store.session() as s:
        s.add_all([LLMCall(purpose="explain", request_hash="a", status="ok", input_tokens=10, output_tokens=5,
                           audio_tokens=4, cost=0.25, **common),
                   LLMCall(purpose="explain", request_hash="b", status="error", **common),
                   LLMCall(purpose="score", request_hash="c", status="ok", input_tokens=1, output_tokens=2, cost=0.5,
                           **common)])
    with store.session() as s:
        everything, explain = call_totals(s), call_totals(s, "explain")
    assert (everything.calls, everything.failed, everything.input_tokens, everything.output_tokens) == (3, 1, 11, 7)
    assert everything.cost == pytest.approx(0.75) and everything.by_status == {"ok": 2, "error": 1}
    assert (explain.calls, explain.audio_tokens, explain.cost) == (2, 4, 0.25)


PLUGIN = '''
"""A third-party provider: the mock's answers, titled with a greeting from [llm.options]."""
import json

from pydantic import BaseModel

from autointerp.llm.mock import MockModel
from autointerp.llm.registry import Provider, register


class EchoSettings(BaseModel):
    greeting: str


class EchoModel(MockModel):
    provider = "echo"

    def __init__(self, config, key, options):
        super().__init__(config.model or "echo-1")
        self.greeting = options.greeting

    async def _execute(self, request, structured="json_schema"):
        done = await super()._execute(request, structured)
        answer = json.loads(done.text)
        if "title" in answer:
            answer["title"] = self.greeting
        done.text = json.dumps(answer)
        return done


register(Provider("echo", EchoModel, "says hello", settings=EchoSettings, needs_model=False,
                  prices={"echo-1": (1.0, 2.0)}))
'''

SCRIPT = '''
import sys
from autointerp.cli import main
config, bad = sys.argv[1], sys.argv[2]
assert main(["explain", bad, "--llm", "echo"]) == 2
assert main(["mine", config]) == 0
sys.exit(main(["explain", config, "--llm", "echo", "--features", "0-5"]))
'''


def test_a_provider_installed_from_a_package_runs_a_stage(planted, tmp_path):
    package = tmp_path / "echo_pkg"
    package.mkdir()
    (package / "autointerp_echo.py").write_text(PLUGIN)
    (package / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "autointerp-echo"
        version = "0.1.0"
        [project.entry-points."autointerp.providers"]
        echo = "autointerp_echo"
        [tool.setuptools]
        py-modules = ["autointerp_echo"]
    '''))
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site),
                    str(package)], check=True, capture_output=True, timeout=300)
    assert list(site.glob("autointerp_echo-0.1.0.dist-info/entry_points.txt"))
    config = planted.config
    config.write_text(config.read_text() + '\n[llm.options]\ngreeting = "hello from a plugin"\n')
    bad = config.with_name("bad.toml")
    bad.write_text(config.read_text().replace('greeting = "hello from a plugin"', "greeting = 3"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(bad)], env=env, capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
    finally:
        subprocess.run([*pip, "uninstall", "-y", "autointerp-echo"], env={**env, "PYTHONPATH": str(site)},
                       capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[llm.options] greeting: Input should be a valid string" in done.stderr
    from autointerp.config import load_config
    from autointerp.store.engine import Store
    from autointerp.store.schema import Label
    store = Store(load_config(config).db_url)
    try:
        with store.session() as s:
            labels = list(s.scalars(select(Label).where(Label.status == "done")))
            calls = list(s.scalars(select(LLMCall)))
    finally:
        store.close()
    assert labels and {(label.provider, label.title) for label in labels} == {("echo", "hello from a plugin")}
    assert calls and {c.provider for c in calls} == {"echo"} and all(c.cost > 0 for c in calls)  # its own prices
    assert "echo" not in registry.names()  # not installed here, nor left behind
