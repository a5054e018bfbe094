"""LLM prompts as Jinja2 templates: the bundled prompts/ folder, overridable file by file from a
user's own prompts folder ([explain] prompts_dir)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import jinja2

from autointerp.errors import ConfigError
from autointerp.resources import resource_dir


@dataclass(frozen=True)
class Prompt:
    template: str
    """The template pair's name, e.g. explain (explain_system.j2 + explain_user.j2)."""
    system: str
    user: str
    template_hash: str
    """sha256 of both template sources: which wording produced a label."""


class Prompts:
    def __init__(self, user_dir: Path | None = None) -> None:
        if user_dir is not None and not user_dir.is_dir():
            raise ConfigError(f"prompts folder {user_dir} does not exist: set [explain] prompts_dir to a folder of .j2 files")
        folders = ([str(user_dir)] if user_dir else []) + [str(resource_dir("prompts"))]
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), undefined=jinja2.StrictUndefined,
                                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                      autoescape=False)
        self._sources: dict[str, str] = {}

    def render(self, name: str, **context) -> Prompt:
        parts = {}
        sources = []
        for part in ("system", "user"):
            filename = f"{name}_{part}.j2"
            try:
                template = self.env.get_template(filename)  # compiled once, cached by the environment
                if filename not in self._sources:
                    self._sources[filename] = self.env.loader.get_source(self.env, filename)[0]
                sources.append(self._sources[filename])
                parts[part] = template.render(**context).strip()
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(f"prompt template {exc.filename or filename} line {exc.lineno}: {exc.message}: fix the template") from None
            except jinja2.UndefinedError as exc:
                raise ConfigError(f"prompt template {filename}: {exc.message}: use only the variables the bundled template uses") from None
            except Exception as exc:  # noqa: BLE001 - a user's template may raise anything while rendering
                raise ConfigError(f"prompt template {filename} raised {type(exc).__name__} while rendering ({exc}): "
                                  f"fix the template") from None
        digest = hashlib.sha256("\x00".join(sources).encode()).hexdigest()
        return Prompt(name, parts["system"], parts["user"], digest)
