"""Shared basics that every layer above the device contract needs: settings, durations and MQTT
connection helpers. `core` because it is the small kernel under the components; it imports
nothing of moclo's but `devices`, so the CLI on top can stay the CLI only."""
