"""LLM providers behind one interface (autointerp.llm.base.Model) and the client every call goes through."""

from __future__ import annotations

import os

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError
from autointerp.llm.base import DEFAULT_KEY_ENV, Model


def api_key(config: LLMConfig) -> str:
    """The provider's key from the environment; a clear message when it is missing. Never logged."""
    env = config.api_key_env or DEFAULT_KEY_ENV[config.provider]
    key = os.environ.get(env, "")
    if not key and config.provider == "openai" and config.base_url:
        return "not-needed"  # local OpenAI-compatible servers usually take any key
    if not key:
        raise ConfigError(f"no API key for {config.provider}: set the {env} environment variable "
                          f"(or name another variable in [llm] api_key_env)")
    return key


def make_model(config: LLMConfig) -> Model:
    """The Model for [llm] provider; the offline labeler is not an LLM and is handled by the stages."""
    if config.provider == "mock":
        from autointerp.llm.mock import MockModel
        return MockModel(config.model)
    if config.provider in ("openai", "gemini") and not config.model:
        raise ConfigError(f"[llm] model is required for provider {config.provider!r}: "
                          f"set it in the config or pass --model")
    if config.provider == "openai":
        from autointerp.llm.providers.openai import OpenAIChatModel
        return OpenAIChatModel(config, api_key(config))
    if config.provider == "gemini":
        from autointerp.llm.providers.gemini import GeminiModel
        return GeminiModel(config, api_key(config))
    raise ConfigError(f"[llm] provider {config.provider!r} has no LLM model: use openai, gemini or mock")
