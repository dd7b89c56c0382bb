"""Routing: which routes a change goes by, and who the targets of a step are at a moment."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from notify.model import (
    Channel,
    EscalationStep,
    NotifyConfig,
    Person,
    Rotation,
    Route,
    Subject,
    Target,
)
from notify.routing import matching_routes, recipients

NOW = datetime(2026, 12, 8, 12, tzinfo=UTC)  # in the second week: dr-bakker on call


def person(name: str, *tenants: str) -> Person:
    return Person(name, tenants, (Channel(f"ntfy://{name}"),))


PEOPLE = {
    p.name: p
    for p in (
        person("farmer", "farm"),
        person("vet", "farm", "other-farm"),
        person("dr-jansen", "cardiology"),
        person("dr-bakker", "cardiology"),
        person("dr-visser", "cardiology"),
        person("intruder", "elsewhere"),
    )
}
ROTATION = Rotation("cardiology", "cardiology", ("dr-jansen", "dr-bakker", "dr-visser"),
                    datetime(2026, 11, 30, 7, tzinfo=UTC))  # fmt: skip


def step(*names: str) -> tuple[EscalationStep, ...]:
    return (EscalationStep(0, tuple(Target("person", n) for n in names)),)


def route(name: str, tenant: str = "farm", **settings: object) -> Route:
    return Route(name, tenant, step("farmer"), **settings)  # type: ignore[arg-type]


def cow(rule: str = "fever", **changes: object) -> Subject:
    subject = Subject("alert", "a1", "raised", "farm", "cow_tracker", "cow-0007", rule,
                      "warning", "38.9 °C", 0)  # fmt: skip
    return replace(subject, **changes)  # type: ignore[arg-type]


def config(*routes: Route) -> NotifyConfig:
    return NotifyConfig(PEOPLE, {"cardiology": ROTATION}, routes)


def names(routes: tuple[Route, ...]) -> list[str]:
    return [r.name for r in routes]


def test_the_first_matching_route_is_taken_and_no_other() -> None:
    routes = config(route("calving", rules=("calving",)), route("fever"), route("everything"))
    assert names(matching_routes(routes, cow("fever"))) == ["fever"]
    assert names(matching_routes(routes, cow("calving"))) == ["calving"]


def test_continue_matching_goes_on_to_the_next_matching_routes() -> None:
    routes = config(
        route("log-all", continue_matching=True),
        route("calving", rules=("calving",), continue_matching=True),
        route("fever", rules=("fever",)),
        route("never-reached"),
    )
    assert names(matching_routes(routes, cow("fever"))) == ["log-all", "fever"]
    # fever does not match a calving; the last route is reached and ends the search.
    assert names(matching_routes(routes, cow("calving"))) == ["log-all", "calving", "never-reached"]


def test_each_filter_must_match_when_given() -> None:
    cases = {
        "tenant": route("r", tenant="other-farm"),
        "device_type": route("r", device_types=("thermostat",)),
        "rule": route("r", rules=("calving",)),
        "device": route("r", devices=("cow-01*",)),
        "severity": route("r", min_severity="critical"),
        "kind": route("r", kinds=("notice",)),
    }
    for what, refusing in cases.items():
        assert matching_routes(config(refusing), cow()) == (), what
    accepting = route("r", device_types=("cow_tracker",), rules=("fever",), devices=("cow-00*",),
                      min_severity="warning", kinds=("alert",))  # fmt: skip
    assert names(matching_routes(config(accepting), cow())) == ["r"]  # positive control


def test_a_route_of_one_tenant_never_takes_another_tenants_change() -> None:
    routes = config(route("farm-all"))
    assert names(matching_routes(routes, cow())) == ["farm-all"]
    assert matching_routes(routes, cow(tenant="other-farm")) == ()


def test_recipients_are_each_told_once_in_the_order_the_targets_give() -> None:
    targets = [Target("person", n) for n in ("vet", "farmer", "vet", "farmer")]
    assert [p.name for p in recipients(config(), targets, NOW)] == ["vet", "farmer"]


def test_oncall_targets_are_resolved_at_the_moment_given() -> None:
    first, second = Target("oncall", "cardiology"), Target("oncall", "cardiology", 2)
    assert [p.name for p in recipients(config(), [first, second], NOW)] == ["dr-bakker",
                                                                           "dr-visser"]  # fmt: skip
    later = datetime(2026, 12, 15, 12, tzinfo=UTC)
    assert [p.name for p in recipients(config(), [first], later)] == ["dr-visser"]
    # The one on call named again, directly: still told once.
    both = [first, Target("person", "dr-bakker")]
    assert [p.name for p in recipients(config(), both, NOW)] == ["dr-bakker"]


def test_a_person_of_another_tenant_is_never_a_recipient_for_this_one() -> None:
    targets = [Target("person", "intruder"), Target("person", "vet")]
    assert [p.name for p in recipients(config(), targets, NOW)] == ["intruder", "vet"]
    assert [p.name for p in recipients(config(), targets, NOW, tenant="farm")] == ["vet"]


def test_targets_that_name_nobody_give_nobody() -> None:
    targets = [
        Target("person", "ghost"),
        Target("oncall", "ward"),
        Target("oncall", "cardiology", 9),
    ]
    assert recipients(config(), targets, NOW) == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*PEOPLE, "ghost"]), max_size=12))
def test_recipients_keep_the_first_of_each_and_their_order(given_names: list[str]) -> None:
    targets = [Target("person", n) for n in given_names]
    found = [p.name for p in recipients(config(), targets, NOW)]
    expected = list(dict.fromkeys(n for n in given_names if n in PEOPLE))
    assert found == expected
