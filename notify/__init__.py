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
    file.py      reads the notify file, with FILE:LINE errors (file_entry.py: one table's
                 keys; file_routes.py: rotations and routes)
    oncall.py    who is on call in a rotation at a moment, and its shifts
    quiet.py     until when a person's quiet hours hold a message back
    routing.py   which routes a change goes by, and who a step's targets are
    walltime.py  wall-clock times in a time zone as instants, across DST changes
    dispatch.py  the Dispatcher: takes changes, hands out due deliveries, records outcomes
    workflow.py  when: groups, their flush, escalation steps, repeats, quiet hours' end
    telling.py   who and how: one message per person, held or queued, one delivery per channel
    compose.py   the words of a message (title, listed changes, acknowledgement links)
    outbox.py    the SQLite file that keeps all of it across crashes
    timeline.py  the timeline rows each step leaves for InfluxDB
    service.py   the service: MQTT in, the dispatcher, channels out, the timeline to InfluxDB,
                 the file read again on change (`moclo notify run`)
    feed.py      the MQTT input: a persistent session, each message acknowledged once taken
    subjects.py  what arrives, read into Subjects (or refused, with the reason)
    senders.py   one Apprise URL per channel, each channel its own queue and thread
    metrics.py   /metrics and /healthz
"""
