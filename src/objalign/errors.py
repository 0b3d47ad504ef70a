"""User-facing errors: one clear line naming the bad value, what was expected and the fix.

The CLI prints an :class:`ObjalignError` as a single line (no traceback) and exits with status 2.
"""

import difflib
import importlib


class ObjalignError(ValueError):
    """A problem with the user's input, configuration or environment (not a bug in objalign)."""


class MissingDependencyError(ObjalignError, ImportError):
    """An optional dependency is not installed; the message gives the exact ``pip install`` line."""


def did_you_mean(value, choices, n: int = 1, cutoff: float = 0.6, prefix: str = "") -> str:
    """``"; did you mean 'x'?"`` (up to ``n`` close matches of ``value`` among ``choices``, each written as
    ``prefix`` + the choice), or ``""`` when nothing is close: the hint every unknown-name error carries."""

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""


def require(module: str, extra: str, package: str | None = None):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that provides it."""

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised when extras are absent
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"objalign needs '{pkg}' for this step, which is not installed: "
            f"pip install 'objalign[{extra}]' (or pip install {pkg})"
        ) from exc
