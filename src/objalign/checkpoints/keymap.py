"""Strict key maps: every key of an original checkpoint is renamed (or split, or knowingly dropped) by a rule.

A key no rule matches, a target key the model does not have, a target the file does not fill, or a shape
that differs is an :class:`~objalign.errors.ObjalignError` naming the file and the first offending key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from objalign.errors import ObjalignError


@dataclass(frozen=True)
class Rule:
    """One renaming rule.

    Parameters
    ----------
    pattern : str
        Regular expression matched against the whole original key.
    targets : tuple of str
        ``re.sub`` templates of the new key(s). Several targets with ``split``: the tensor is cut into that many
        equal chunks along dim 0 (fused ``qkv`` -> ``q``, ``k``, ``v``); several without ``split``: the same tensor
        goes to each (tied weights).
    split : bool
        Cut the tensor into ``len(targets)`` chunks along dim 0.
    transform : callable, optional
        Applied to the tensor (e.g. a transpose) before it is stored.
    """

    pattern: str
    targets: tuple[str, ...] = ()
    split: bool = False
    transform: Callable | None = None

    def __post_init__(self):
        object.__setattr__(self, "_re", re.compile(self.pattern))


def rule(pattern: str, *targets: str, split: bool = False, transform: Callable | None = None) -> Rule:
    """Shorthand for :class:`Rule`; a rule with no target drops the key on purpose (documented unused keys)."""
    return Rule(pattern, tuple(targets), split, transform)


def apply_rules(state_dict: dict, rules: list[Rule], where: str) -> tuple[dict, dict]:
    """Rename ``state_dict`` with ``rules`` (the first matching rule wins).

    Returns
    -------
    converted : dict of str to torch.Tensor
    source_of : dict of str to str
        For every new key, the original key it came from (for error messages).
    """
    converted, source_of = {}, {}
    for key, tensor in state_dict.items():
        for r in rules:
            m = r._re.fullmatch(key)
            if m is None:
                continue
            value = r.transform(tensor) if r.transform is not None else tensor
            if r.split:
                if value.shape[0] % len(r.targets):
                    raise ObjalignError(f"{where}: key {key!r} has shape {tuple(value.shape)}, which does not split "
                                        f"into {len(r.targets)} equal parts; the file belongs to another architecture")
                parts = value.chunk(len(r.targets), dim=0)
            else:
                parts = [value] * len(r.targets)
            for template, part in zip(r.targets, parts):
                new = m.expand(template)
                converted[new] = part.contiguous()
                source_of[new] = key
            break
        else:
            raise ObjalignError(f"{where}: unknown key {key!r} (no rule of the key map matches it); the file "
                                "belongs to another architecture or is not an original checkpoint")
    return converted, source_of


def check_against(model, converted: dict, source_of: dict, where: str) -> None:
    """Every model key filled exactly once, with the model's shape; otherwise one line naming the key."""
    expected = model.state_dict()
    for new, tensor in converted.items():
        if new not in expected:
            raise ObjalignError(f"{where}: key {source_of[new]!r} maps to {new!r}, which the transformers model "
                                "does not have; the file belongs to another architecture (or this transformers "
                                "version names its weights differently)")
        if tuple(expected[new].shape) != tuple(tensor.shape):
            raise ObjalignError(f"{where}: key {source_of[new]!r} has shape {tuple(tensor.shape)} where the model "
                                f"expects {tuple(expected[new].shape)}; the file belongs to another architecture")
    missing = [k for k in expected if k not in converted]
    if missing:
        raise ObjalignError(f"{where}: the file lacks the weights of {missing[0]!r} ({len(missing)} model keys "
                            "missing); it is truncated or belongs to another architecture")


def count_indexed(state_dict: dict, prefix: str) -> int:
    """Number of ``prefix<i>.`` blocks (``i`` = 0, 1, ...) in a state dict's keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def need(state_dict: dict, key: str, where: str):
    """``state_dict[key]`` or one line saying the file lacks it."""
    if key not in state_dict:
        raise ObjalignError(f"{where}: the file has no key {key!r}; it belongs to another architecture "
                            f"(first key found: {next(iter(state_dict))!r})")
    return state_dict[key]
