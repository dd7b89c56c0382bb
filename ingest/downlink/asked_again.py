"""`commands/get` answered at most once per window per device.

Each `commands/get` sends a device all its pending commands again. That is what a device that
just connected needs, and a waste for one that asks often (a firmware that asks every second, a
reconnect loop): ten pending commands asked for twenty times are two hundred messages. So the
first ask of a device is answered at once, and any number of asks within the next `every_s`
are answered once, when that window ends: never dropped, never more than one extra answer per
window. A command sent meanwhile reaches the device on its own, as always.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str, str]  # (tenant, device type, device id)


@dataclass(slots=True)
class AskedAgain:
    every_ns: int
    _answered: dict[Key, int] = field(default_factory=dict)  # when each was last answered
    _waiting: dict[Key, int] = field(default_factory=dict)  # asked meanwhile: answer at

    def ask(self, key: Key, now_ns: int) -> bool:
        """Whether to answer this ask now; if not, it is answered when `due` says so."""
        last = self._answered.get(key)
        if last is None or now_ns - last >= self.every_ns:
            self._answered[key] = now_ns
            return True
        self._waiting.setdefault(key, last + self.every_ns)
        return False

    def due(self, now_ns: int) -> list[Key]:
        """The devices whose asks were held and whose window ended: answer them now (their
        next window starts now). Forgets devices that asked more than a window ago."""
        ready = [key for key, at in self._waiting.items() if at <= now_ns]
        for key in ready:
            del self._waiting[key]
            self._answered[key] = now_ns
        old = now_ns - self.every_ns
        for key in [k for k, at in self._answered.items() if at <= old and k not in self._waiting]:
            del self._answered[key]
        return ready

    def next_due_ns(self) -> int | None:
        return min(self._waiting.values()) if self._waiting else None
