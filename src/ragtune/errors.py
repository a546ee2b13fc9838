"""ragtune's exceptions.

Each also subclasses the matching built-in error, so ``except ValueError`` keeps working for callers who do not
know ragtune's hierarchy (the peft habit).
"""

from __future__ import annotations


class RagtuneError(Exception):
    """Base class of every error ragtune raises on purpose."""


class DataFormatError(RagtuneError, ValueError):
    """Input data is malformed. The message names the file, the line and what to change."""


class ConfigError(RagtuneError, ValueError):
    """A configuration value or command-line argument is invalid."""


class MissingExtraError(RagtuneError, ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""


def require(module: str, extra: str, pip_name: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError` naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        name = pip_name or module
        raise MissingExtraError(
            f"this feature needs the package {name!r}; install it with: pip install 'ragtune[{extra}]'"
        ) from exc
