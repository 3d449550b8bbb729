"""Checks of a dataclass's values against its fields: their types, and the choices and ranges in their metadata.

A field's metadata may hold `choices` (the values it takes) and a range: `above`, `at_least`, `below`, `at_most`
(None: no bound), with `zero_means` saying what 0 does when 0 is the least value. Each check raises a one-line
UserError naming the field, the same from notebooks and config files as from flags.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from tf_finetune.core.errors import UserError, did_you_mean

RANGE_FACTS = ("above", "at_least", "below", "at_most", "zero_means")


def check_types(values: Any) -> None:
    """Values from config files and notebooks bypass argparse: check each has its field's type."""
    for name, hint in typing.get_type_hints(type(values)).items():
        value = getattr(values, name)
        union = typing.get_origin(hint) is typing.Union  # Optional[...]; a bare list[str] is one type
        allowed = tuple(t for t in typing.get_args(hint) if t is not type(None)) if union else (hint,)
        if value is None and type(None) in typing.get_args(hint):
            continue
        expected = tuple(typing.get_origin(t) or t for t in allowed)
        ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
        if float in expected and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if ok and isinstance(value, list):
            ok = all(isinstance(item, str) for item in value)
        if not ok:
            names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
            raise UserError(f"{name} must be {'a list of str' if list in expected else names}, got {value!r}.")


def check_choices(values: Any) -> None:
    """Fields with a fixed set of values (a list field: each of its items)."""
    for spec in dataclasses.fields(values):
        choices, value = spec.metadata.get("choices"), getattr(values, spec.name)
        for item in value if isinstance(value, list) else [value]:
            if choices and item is not None and item not in choices:
                names = [str(choice) for choice in choices]  # e.g. verbose's 0, 1, 2
                hint = did_you_mean(str(item), names)
                raise UserError(f"{spec.name} must be one of {', '.join(names)}, got {item!r}; {hint}".rstrip("; "))


def check_ranges(values: Any) -> None:
    """Numbers outside their field's range (unset ones pass)."""
    hints = typing.get_type_hints(type(values))
    for spec in dataclasses.fields(values):
        value = getattr(values, spec.name)
        above, at_least, below, at_most, zero_means = (spec.metadata.get(fact) for fact in RANGE_FACTS)
        if value is None or ((above is None or value > above) and (at_least is None or value >= at_least)
                             and (below is None or value < below) and (at_most is None or value <= at_most)):
            continue
        if below is not None or at_most is not None:
            bracket, low = ("(", above) if above is not None else ("[", at_least)
            rule = f"be in {bracket}{low}, {below if below is not None else at_most}{')' if below is not None else ']'}"
        elif above == 0:
            integer = int in (hints[spec.name], *typing.get_args(hints[spec.name]))
            rule = "be a positive number" if integer else "be positive"
        else:
            rule = f"be 0 ({zero_means}) or positive" if zero_means else "not be negative"
        raise UserError(f"--{spec.name} must {rule}, got {value}.")
