"""An alert's message: its rule's template (`message`) filled in with what the change knows.

Made only when a change is announced, and only from the fields the template names: a silence's
duration or an arrival's clock time is not worked out for a fever.
"""

from __future__ import annotations

import re
import string
import time
from typing import Final

from devices.place_rules import ArrivalRule
from devices.rule_base import format_seconds
from devices.rules import Rule
from ingest.alerts.baselines import BaselineState
from ingest.alerts.conditions import ConditionState

_NS: Final = 1_000_000_000


def alert_message(rule: Rule, condition: ConditionState, value: float, ts: int) -> str:
    """The rule's template filled in, with only the fields it names worked out."""
    try:
        return rule.message.format(**_fields(rule, condition, value, ts))
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        # Templates are tried when a rule is made; should one still fail on a value (an
        # infinite ratio cannot be a duration: `{silent_for}`), the alert must not be lost to
        # its wording, nor stop the judging of the readings after it.
        return f"{rule.name}: {value:g} ({rule.message})"


def _fields(rule: Rule, condition: ConditionState, value: float, ts: int) -> dict[str, object]:
    """The fields the template names, worked out (inside `alert_message`'s `try`)."""
    names = _template_names(rule)
    fields: dict[str, object] = {}
    for name in ("value", "delta"):
        if name in names:
            fields[name] = value
    if "baseline" in names:
        fields["baseline"] = condition.baseline if isinstance(condition, BaselineState) else 0.0
    if "distance_m" in names:
        fields["distance_m"] = abs(value)
    if "silent_for" in names:
        fields["silent_for"] = format_seconds(value)
    if "field" in names:
        fields["field"] = getattr(rule, "field", "")
    if "eta" in names:
        fields["eta"] = _clock(ts / _NS + value) if isinstance(rule, ArrivalRule) else ""
    if "minutes" in names:
        fields["minutes"] = value / 60
    return fields


# By the rule object's id, the rule kept with its names (so the id is not reused meanwhile).
_NAMES: dict[int, tuple[Rule, frozenset[str]]] = {}


def _template_names(rule: Rule) -> frozenset[str]:
    """The fields a rule's message names (`{value:.1f}`, `{field}`, ...), worked out once."""
    found = _NAMES.get(id(rule))
    if found is None:
        if len(_NAMES) > 10_000:  # rules reloaded many times: forget the old ones
            _NAMES.clear()
        try:
            parsed = [n for _, n, _, _ in string.Formatter().parse(rule.message) if n]
        except ValueError:  # a malformed template: formatting says so, and the fallback shows it
            parsed = []
        # `{value.real}` or `{value[0]}` names `value`.
        names = frozenset(re.split(r"[.\[]", n, maxsplit=1)[0] for n in parsed)
        found = _NAMES[id(rule)] = (rule, names)
    return found[1]


def _clock(epoch_s: float) -> str:
    """`18:40 UTC`: when an arrival is expected (a reading's own time plus the estimate)."""
    return time.strftime("%H:%M UTC", time.gmtime(epoch_s))
