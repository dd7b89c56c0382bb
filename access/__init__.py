"""Who may do what: the registry of devices, service and app accounts and API tokens (SQLite),
and the broker's password and ACL files generated from it.

A device speaks only as itself (its MQTT account may publish only its own telemetry topic); a
person or an app sees only their own tenants (API tokens are scoped server-side).
"""
