"""Which rules apply to which device: the defaults of each device type, then overrides.

Precedence, most specific last: a device type's default rules, then rules for that type from a
rules file, then for the tenant, then for the device. A later rule with the same name replaces
the earlier one (a file may repeat only the settings it changes); `enabled = false` removes it.
The rules file itself is read by `ingest/alerts/rulesfile.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from devices.catalogue import DEVICE_TYPES
from devices.rules import Rule
from devices.types import DeviceType


@dataclass(frozen=True, slots=True)
class Override:
    """A rule from a rules file, and where it applies (None: everywhere)."""

    device_type: str
    rule: Rule | None  # None: the rule called `name` is switched off here
    name: str
    tenant: str | None = None
    device_id: str | None = None
    line: int = 0  # where it was written, for messages


class RuleBook:
    def __init__(
        self,
        overrides: Iterable[Override] = (),
        catalogue: Mapping[str, DeviceType] = DEVICE_TYPES,
        source: str = "",
    ) -> None:
        self.catalogue = catalogue
        self.overrides = tuple(overrides)
        self.source = source  # the rules file's name, or "" for the defaults alone
        self._cache: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        self._has_device_rules = {
            (o.device_type, o.tenant, o.device_id) for o in self.overrides if o.device_id
        }

    @classmethod
    def empty(cls) -> RuleBook:
        """No rules for any type (to measure what rules cost)."""
        return cls(catalogue={})

    def rules_for(self, tenant: str, device_type: str, device_id: str) -> tuple[Rule, ...]:
        specific = (device_type, tenant, device_id) in self._has_device_rules
        key = (tenant, device_type, device_id if specific else "")
        rules = self._cache.get(key)
        if rules is None:
            rules = self._cache[key] = self._resolve(tenant, device_type, device_id)
        return rules

    def effective(
        self, device_type: str, tenant: str | None = None, device_id: str | None = None
    ) -> tuple[tuple[Rule, Override | None], ...]:
        """The rules in force at a scope, each with the override that set it (None: the type's
        default). Without a tenant only type-wide overrides count, without a device id no
        device's; with both it is exactly what `rules_for` gives that device."""
        device = self.catalogue.get(device_type)
        chosen: dict[str, tuple[Rule | None, Override | None]] = (
            {r.name: (r, None) for r in device.rules} if device else {}
        )
        for scope in (0, 1, 2):
            for o in self.overrides:
                if o.device_type != device_type or _scope(o) != scope:
                    continue
                if (o.tenant is not None and o.tenant != tenant) or (
                    o.device_id is not None and o.device_id != device_id
                ):
                    continue
                chosen[o.name] = (o.rule, o)
        return tuple((r, o) for r, o in chosen.values() if r is not None)

    def _resolve(self, tenant: str, device_type: str, device_id: str) -> tuple[Rule, ...]:
        return tuple(rule for rule, _ in self.effective(device_type, tenant, device_id))


def _scope(o: Override) -> int:
    return 2 if o.device_id is not None else 1 if o.tenant is not None else 0
