"""The exceptions a user can meet, and warnings. Each message names the input and the fix; the CLI prints
it on one line."""

import sys


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"autointerp: warning: {message}", file=sys.stderr)


class AutointerpError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""


class ConfigError(AutointerpError):
    """The config file or a command-line override is invalid."""


class InputError(AutointerpError):
    """A checkpoint, corpus or items file cannot be used."""


class StoreError(AutointerpError):
    """The database cannot be opened or was written by another schema version."""


class DamagedDatabase(StoreError):
    """The database holds a value of the wrong kind (text where a number belongs, bytes that are not
    UTF-8, ...): it was changed outside autointerp, or damaged."""


class ProviderError(AutointerpError):
    """An LLM provider refused the stage's requests for a reason retrying cannot fix (bad key, unknown model)."""


class CostLimitReached(AutointerpError):
    """Continuing would exceed the configured cost limit."""
