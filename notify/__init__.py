"""Notifications: the right person's phone at the right moment.

A service of its own (`moclo notify run`), beside ingest, like Alertmanager beside Prometheus:
it follows the alert changes and automation notices ingest publishes (QoS 1, a persistent
session), decides who is told (the notify file: people, their channels, on-call rotations,
routes with escalation steps, quiet hours, grouping, repeats), keeps what it owes in an outbox
on disk, and sends through Apprise, one channel never holding back another. Ingest never waits
for it, and one notifier serves every ingest worker, so ten cows with fever group into one
message however the herd is split.

    model.py     what the notify file says (people, channels, rotations, routes) and what is
                 notified (a `Subject`: one alert change or notice)
    links.py     the signed one-tap acknowledgement link a message carries
"""
