"""The one place that lists the device types. Adding a type: one module, one line here."""

from __future__ import annotations

from devices import (
    blood_pressure,
    car,
    cow_tracker,
    fridge,
    humidity_meter,
    light,
    pacemaker,
    smart_meter,
    thermostat,
)
from devices.types import DeviceType

DEVICE_TYPES: dict[str, DeviceType] = {
    device.name: device
    for device in (
        cow_tracker.DEVICE,
        thermostat.DEVICE,
        pacemaker.DEVICE,
        smart_meter.DEVICE,
        blood_pressure.DEVICE,
        car.DEVICE,
        fridge.DEVICE,
        humidity_meter.DEVICE,
        light.DEVICE,
    )
}


def get_device_type(name: str) -> DeviceType:
    """The device type called `name`; KeyError says which names exist."""
    try:
        return DEVICE_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(DEVICE_TYPES))
        raise KeyError(f"unknown device type {name!r}; known types: {known}") from None
