"""LLM providers behind one interface (base.Model, registered in registry), and the client every call goes
through (client.LLMClient: deadline, retries, cache, cost, the llm_calls log; batch for batch APIs).
May import config, errors and store; never the stages."""

from __future__ import annotations

import os

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError
from autointerp.llm import registry
from autointerp.llm.base import Model


def api_key(config: LLMConfig) -> str:
    """The provider's key from the environment ("" for a provider that needs none); a clear message
    when it is missing. Never logged."""
    provider = registry.get(config.provider)
    env = config.api_key_env or provider.key_env
    if env is None:
        return ""
    key = os.environ.get(env, "")
    if not key and provider.key_optional_with_base_url and config.base_url:
        return ""  # local OpenAI-compatible servers usually take any key
    if not key:
        raise ConfigError(f"no API key for {config.provider}: set the {env} environment variable "
                          f"(or name another variable in [llm] api_key_env)")
    return key


def check_llm(config: LLMConfig) -> str:
    """The provider's key after checking everything the provider needs (model, key, options); every
    missing thing is named in one message, so one fix-and-retry is enough."""
    if config.provider == registry.NOT_LLM:
        raise ConfigError(f"[llm] provider {config.provider!r} has no LLM model: use one of "
                          f"{', '.join(registry.names())}")
    provider = registry.get(config.provider)
    problems, key = [], ""
    if provider.needs_model and not config.model:
        problems.append(f"[llm] model is required for provider {config.provider!r}: set it in the config or pass --model")
    try:
        key = api_key(config)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        registry.check_options(config.provider, config.options)
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError("; and ".join(problems))
    return key


def make_model(config: LLMConfig) -> Model:
    """The Model for [llm] provider; the offline labeler is not an LLM and is handled by the stages."""
    key = check_llm(config)
    return registry.get(config.provider).factory(config, key, registry.check_options(config.provider, config.options))
