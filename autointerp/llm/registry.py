"""The provider registry: one entry per LLM provider (name, key variable, prices, extra settings, batch
support, factory), like the SAE format registry. Everything that lists providers derives from it: the
config's check of [llm] provider, the CLI's --llm choices, make_model, the key and price tables.

Built-in providers are the mock (autointerp.llm.mock) and one module per provider in
autointerp/llm/providers/, named like the provider it registers (providers/openai.py registers
"openai"); adding one is one new file. Third-party packages register through the entry point group
`autointerp.providers` (an entry point named like its provider, pointing at the module that calls
`register`, or at a `Provider`). Names are known without importing anything; a provider's module is
imported the first time it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from autointerp.errors import ConfigError

if TYPE_CHECKING:
    from autointerp.config import LLMConfig
    from autointerp.llm.base import Model

ENTRY_POINT_GROUP = "autointerp.providers"
NOT_LLM = "offline"
"""The statistical tag labeler: a valid [llm] provider that is not an LLM (handled by the stages)."""
_MOCK_MODULE = "autointerp.llm.mock"
_PROVIDERS_PACKAGE = "autointerp.llm.providers"

Price = tuple[float, float] | tuple[float, float, float]
Factory = Callable[["LLMConfig", str, Any], "Model"]
"""(the [llm] config, the API key or "" when none is needed, the validated [llm.options] or None)."""


@dataclass(frozen=True)
class Provider:
    name: str
    factory: Factory
    description: str
    key_env: str | None = None
    """The environment variable holding the key by default; None: the provider needs no key."""
    key_optional_with_base_url: bool = False
    """A custom base_url (a local server) may run without a key."""
    prices: Mapping[str, Price] = field(default_factory=dict)
    """USD per million tokens by model name: (input, output) or (input, output, audio input)."""
    settings: type[BaseModel] | None = None
    """The schema of [llm.options], the provider's own settings (None: it takes none)."""
    batch: bool = False
    """Whether it has a batch API (`--batch`)."""
    needs_model: bool = True
    """[llm] model must be set."""


_REGISTRY: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    """Add a provider; a second provider of the same name is refused."""
    if provider.name == NOT_LLM or provider.name in _REGISTRY:
        raise ValueError(f"LLM provider {provider.name!r} is already registered")
    _REGISTRY[provider.name] = provider
    return provider


def _builtin_modules() -> dict[str, str]:
    """{provider name: module} of the built-in providers, read from the file names (no import)."""
    package = importlib.import_module(_PROVIDERS_PACKAGE)
    found = {info.name: f"{_PROVIDERS_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
             if not info.name.startswith("_")}
    return {"mock": _MOCK_MODULE, **found}


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every provider name, built-in first, without importing any provider."""
    builtin = _builtin_modules()
    return [*builtin, *(n for n in sorted(_entry_points()) if n not in builtin)]


def choices() -> list[str]:
    """What [llm] provider and --llm accept: offline, then the registered providers."""
    return [NOT_LLM, *names()]


def get(name: str) -> Provider:
    """The provider registered under `name`, importing its module the first time; ConfigError naming
    the known providers when there is none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    builtin = _builtin_modules()
    if name in builtin:
        importlib.import_module(builtin[name])
    else:
        point = _entry_points().get(name)
        if point is None:
            raise ConfigError(f"[llm] provider {name!r} is not registered: use one of {', '.join(choices())} "
                              f"(or install a package that registers it in the {ENTRY_POINT_GROUP!r} entry points)")
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's environment
            raise ConfigError(f"LLM provider plugin {name!r} ({point.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}: reinstall or uninstall it") from None
        if isinstance(loaded, Provider) and loaded.name not in _REGISTRY:
            register(loaded)
    if name not in _REGISTRY:
        raise ConfigError(f"LLM provider module for {name!r} registers no provider of that name: "
                          f"it must call autointerp.llm.registry.register(Provider({name!r}, ...))")
    return _REGISTRY[name]


def default_prices() -> dict[str, Price]:
    """The price tables of every built-in provider, merged (plugins' tables join once they are loaded)."""
    for name in _builtin_modules():
        get(name)
    table: dict[str, Price] = {}
    for provider in _REGISTRY.values():
        table.update(provider.prices)
    return table


def check_options(name: str, options: dict[str, Any]) -> BaseModel | None:
    """[llm.options] validated against the provider's settings schema; ConfigError on a mismatch."""
    provider = get(name)
    if provider.settings is None:
        if options:
            raise ConfigError(f"[llm.options] {', '.join(sorted(options))}: provider {name!r} takes no options: "
                              f"remove the [llm.options] table")
        return None
    from pydantic import ValidationError

    try:
        return provider.settings.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"[llm.options] {where}: {first['msg']} (provider {name!r} takes: "
                          f"{', '.join(provider.settings.model_fields)})") from None
