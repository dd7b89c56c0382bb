"""Which behaviour model simulates which device type: one line per type."""

from __future__ import annotations

from simulators.behaviour import BehaviourFactory
from simulators.cow_tracker import CowBehaviour
from simulators.thermostat import ThermostatBehaviour

BEHAVIOURS: dict[str, BehaviourFactory] = {
    "cow_tracker": CowBehaviour,
    "thermostat": ThermostatBehaviour,
}
