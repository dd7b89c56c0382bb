"""msgspec Structs generated from the pydantic reading models: the same fields, types and bounds,
decoded about eight times faster.

The pydantic models (and the JSON Schemas made from them) stay the single source of truth: each
Struct here is built from a model's fields when first asked for, never written by hand, and a
model with anything the generator cannot express exactly (a pattern, a field validator, a type
other than int, float, bool, str or a Literal of strings) gets no Struct at all, so its readings
keep going through pydantic. A Struct may only be stricter than its model, never looser: ingest
sends whatever msgspec refuses through pydantic, whose verdict and reason are the ones kept
(tests/test_fast_readings.py checks both agree on generated inputs).

A Struct carries its model's `measurement_fields` and `pydantic_model` (for the line formatter's
field kinds), and is read by attribute like the model, so rules and line protocol take either.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import annotated_types
import msgspec
from pydantic import BeforeValidator, WithJsonSchema

from devices.base import MAX_TS_NS, MIN_TS_NS, Reading, parse_timestamp


class FastReading(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """The base of every generated Struct; no fields of its own (each subclass declares them).

    Not tracked by the garbage collector (gc=False): a reading holds numbers, strings and
    booleans only, so it can be in no reference cycle, and ingest makes one per reading."""

    measurement_fields: ClassVar[tuple[str, ...]] = ()
    pydantic_model: ClassVar[type[Reading]] = Reading

    if TYPE_CHECKING:  # declared for the type checker only: a Struct would take them as fields
        ts: int
        seq: int


# What the rules and the line formatter read: a reading from either path.
AnyReading = Reading | FastReading

_BOUNDS = {
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.Gt: "gt",
    annotated_types.Lt: "lt",
}


# Epoch seconds whose nanoseconds surely fit InfluxDB's range (MIN_TS_NS..MAX_TS_NS, about
# ±9.22e9 s): inside it parse_timestamp's range checks cannot fail, so the fast path skips them.
_SAFE_EPOCH_S = 9_000_000_000
assert min(MAX_TS_NS, -MIN_TS_NS) > _SAFE_EPOCH_S * 1_000_000_000


class NotExpressible(Exception):
    """A model feature the generator cannot reproduce exactly: the model stays on pydantic."""


@functools.cache
def fast_struct(model: type[Reading]) -> type[FastReading] | None:
    """The Struct generated from `model`, or None if the model has a rule msgspec cannot say
    exactly (its readings then take the pydantic path only)."""
    try:
        return _generate(model)
    except NotExpressible:
        return None


def _generate(model: type[Reading]) -> type[FastReading]:
    config = model.model_config
    if (config.get("strict"), config.get("extra"), config.get("allow_inf_nan")) != (
        True,
        "forbid",
        False,
    ):
        raise NotExpressible("a config other than Reading's: strict, no extra fields, finite")
    if any(info.alias or not info.is_required() for info in model.model_fields.values()):
        raise NotExpressible("an alias or an optional field")
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        raise NotExpressible("field validators")
    # A model validator in "after" mode reads the finished reading by attribute, which a
    # Struct offers as well: it runs on the Struct in __post_init__, its ValueError a refusal.
    # (Its return value is not used: a reading model's validators check, they do not rebuild.)
    checks: list[Callable[[Any], Any]] = []
    for decorator in decorators.model_validators.values():
        if decorator.info.mode != "after":
            raise NotExpressible("a model validator that is not mode='after'")
        checks.append(decorator.func)
    fields = [
        (name, _field_type(name, info.annotation, info.metadata))
        for name, info in model.model_fields.items()
    ]

    def __post_init__(self: Any) -> None:
        # ts arrives in one of its wire forms; the model's own parser makes it nanoseconds.
        # Epoch seconds well inside InfluxDB's range (what simulators and most devices send)
        # are converted here exactly as parse_timestamp does, without its call and type tests
        # (a third of this Struct's decoding); anything else, NaN included, goes through it.
        ts = self.ts
        if type(ts) is float and -_SAFE_EPOCH_S < ts < _SAFE_EPOCH_S:
            self.ts = round(ts * 1_000_000) * 1_000
        elif type(ts) is int and -_SAFE_EPOCH_S < ts < _SAFE_EPOCH_S:
            self.ts = ts * 1_000_000_000
        else:
            self.ts = parse_timestamp(ts)
        for check in checks:
            check(self)

    struct: type[FastReading] = msgspec.defstruct(  # type: ignore[assignment]
        f"Fast{model.__name__}",
        fields,
        bases=(FastReading,),
        namespace={
            "__post_init__": __post_init__,
            "measurement_fields": model.measurement_fields,
            "pydantic_model": model,
        },
        kw_only=True,
        forbid_unknown_fields=True,
    )
    return struct


def _field_type(name: str, annotation: Any, metadata: list[Any]) -> Any:
    """The msgspec type of one model field: its Python type with the same bounds."""
    if name == "ts":
        # The model's Timestamp: a BeforeValidator(parse_timestamp) and its documented schema.
        if not any(isinstance(m, BeforeValidator) and m.func is parse_timestamp for m in metadata):
            raise NotExpressible("ts without the Timestamp validator")
        return int | float | str
    bounds: dict[str, Any] = {}
    for item in metadata:
        key = _BOUNDS.get(type(item))
        if key is not None:
            bounds[key] = getattr(item, key)
        elif not isinstance(item, WithJsonSchema):
            raise NotExpressible(f"{name}: {item!r}")
    if annotation in (int, float):
        return Annotated[annotation, msgspec.Meta(**bounds)] if bounds else annotation
    if bounds:
        raise NotExpressible(f"{name}: bounds on {annotation!r}")
    if annotation in (bool, str):
        return annotation
    if typing.get_origin(annotation) is typing.Literal and all(
        isinstance(value, str) for value in typing.get_args(annotation)
    ):
        return annotation
    raise NotExpressible(f"{name}: type {annotation!r}")
