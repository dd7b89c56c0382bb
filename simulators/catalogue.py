"""Which behaviour model simulates which device type: one line per type."""

from __future__ import annotations

from simulators.behaviour import BehaviourFactory
from simulators.blood_pressure import BloodPressureBehaviour
from simulators.car import CarBehaviour
from simulators.cow_tracker import CowBehaviour
from simulators.fridge import FridgeBehaviour
from simulators.humidity_meter import HumidityMeterBehaviour
from simulators.light import LightBehaviour
from simulators.pacemaker import PacemakerBehaviour
from simulators.smart_meter import SmartMeterBehaviour
from simulators.thermostat import ThermostatBehaviour

BEHAVIOURS: dict[str, BehaviourFactory] = {
    "cow_tracker": CowBehaviour,
    "thermostat": ThermostatBehaviour,
    "pacemaker": PacemakerBehaviour,
    "smart_meter": SmartMeterBehaviour,
    "blood_pressure": BloodPressureBehaviour,
    "car": CarBehaviour,
    "fridge": FridgeBehaviour,
    "humidity_meter": HumidityMeterBehaviour,
    "light": LightBehaviour,
}
