"""Pure parts of Drone Delivery: settings from the environment, fault specs, the business rules
of the Package service, the fleet, and Ingestion's status model."""

from __future__ import annotations

import random
from typing import Any

import pytest

from choreograph import CloudEvent, ConfigError, Reject, RetryPolicy
from choreograph.sdk.graph import workflow_graph
from drone_delivery.faults import Faults, InjectedFault, ServiceFaults
from drone_delivery.package import package_problem
from drone_delivery.scheduler import fleet
from drone_delivery.settings import DEFAULT_RETRY_POLICY, Settings
from drone_delivery.system import declarations
from drone_delivery.tracking import apply_event

# ------------------------------------------------------------------------------- settings


def test_settings_default_to_the_documented_values() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.fleet_size == 50
    assert settings.flight_seconds == 30
    assert settings.deadline_seconds == 45
    assert settings.max_weight_kg == 25
    assert settings.faults == Faults()
    assert settings.retry_policy == DEFAULT_RETRY_POLICY
    assert DEFAULT_RETRY_POLICY.backoff_seconds == (1, 2, 4, 8)
    assert DEFAULT_RETRY_POLICY.max_delivery_attempts == 5


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DRONE_DELIVERY_FLEET_SIZE": "3",
            "DRONE_DELIVERY_FLIGHT_SECONDS": "12.5",
            "DRONE_DELIVERY_DEADLINE_SECONDS": "20",
            "DRONE_DELIVERY_MAX_WEIGHT_KG": "10",
            "DRONE_DELIVERY_FAULTS": "scheduler:error:0.2,delivery:delay_ms:500",
            "DRONE_DELIVERY_RETRY_BACKOFF_SECONDS": "0.5, 1",
            "DRONE_DELIVERY_MAX_DELIVERY_ATTEMPTS": "3",
            "UNRELATED": "ignored",
        }
    )

    assert settings.fleet_size == 3
    assert settings.flight_seconds == 12.5
    assert settings.deadline_seconds == 20
    assert settings.max_weight_kg == 10
    assert settings.faults.of("scheduler") == ServiceFaults(error_probability=0.2)
    assert settings.faults.of("delivery") == ServiceFaults(delay_ms=500)
    assert settings.retry_policy == RetryPolicy(backoff_seconds=(0.5, 1), max_delivery_attempts=3)


def test_blank_variables_mean_the_default() -> None:
    assert Settings.from_env({"DRONE_DELIVERY_FLEET_SIZE": " ", "DRONE_DELIVERY_FAULTS": ""}) == (
        Settings()
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FLEET_SIZE", "many", "DRONE_DELIVERY_FLEET_SIZE must be an integer from 1 to 10000"),
        ("FLEET_SIZE", "0", "DRONE_DELIVERY_FLEET_SIZE must be an integer from 1 to 10000"),
        ("FLIGHT_SECONDS", "-1", "DRONE_DELIVERY_FLIGHT_SECONDS must be a positive number"),
        ("FLIGHT_SECONDS", "nan", "DRONE_DELIVERY_FLIGHT_SECONDS must be a number"),
        ("DEADLINE_SECONDS", "0", "DRONE_DELIVERY_DEADLINE_SECONDS must be a positive number"),
        ("MAX_WEIGHT_KG", "x", "DRONE_DELIVERY_MAX_WEIGHT_KG must be a number"),
        ("RETRY_BACKOFF_SECONDS", "1,x", "DRONE_DELIVERY_RETRY_BACKOFF_SECONDS must be numbers"),
        ("RETRY_BACKOFF_SECONDS", "1,-2", "DRONE_DELIVERY_RETRY_BACKOFF_SECONDS must be delays"),
        ("RETRY_BACKOFF_SECONDS", "99999999", "DRONE_DELIVERY_RETRY_BACKOFF_SECONDS: "),
        ("MAX_DELIVERY_ATTEMPTS", "31", "DRONE_DELIVERY_MAX_DELIVERY_ATTEMPTS must be an integer"),
        ("FAULTS", "scheduler:explode:1", "DRONE_DELIVERY_FAULTS: invalid item"),
    ],
)
def test_an_invalid_variable_is_named_in_the_error(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({f"DRONE_DELIVERY_{variable}": value})
    assert str(caught.value).startswith(message), str(caught.value)


def test_settings_validate_their_fields() -> None:
    with pytest.raises(ConfigError, match="fleet_size must be an integer"):
        Settings(fleet_size=0)
    with pytest.raises(ConfigError, match="flight_seconds must be a positive number"):
        Settings(flight_seconds=0)


# ------------------------------------------------------------------------------- faults


def test_faults_parse_per_service_settings() -> None:
    faults = Faults.parse(" scheduler:error:0.2 , delivery:delay_ms:500,package:reject:1,")

    assert faults.of("scheduler") == ServiceFaults(error_probability=0.2)
    assert faults.of("delivery") == ServiceFaults(delay_ms=500)
    assert faults.of("package") == ServiceFaults(reject_probability=1)
    assert faults.of("ingestion") == ServiceFaults()
    assert not faults.of("ingestion").active
    assert Faults.parse(faults.describe()) == faults


def test_several_kinds_combine_for_one_service() -> None:
    faults = Faults.parse("delivery:error:0.5,delivery:delay_ms:0,delivery:reject:0.1")

    assert faults.of("delivery") == ServiceFaults(error_probability=0.5, reject_probability=0.1)


def test_no_faults_parse_from_an_empty_spec() -> None:
    assert Faults.parse("") == Faults()
    assert Faults.parse(" , ") == Faults()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("scheduler", "invalid item 'scheduler': expected <service>:<kind>:<value>"),
        ("scheduler:error", "invalid item 'scheduler:error': expected <service>:<kind>:<value>"),
        ("a:b:c:d", "expected <service>:<kind>:<value>"),
        ("drones:error:0.1", "unknown service 'drones'; expected one of delivery, ingestion"),
        ("scheduler:explode:1", "unknown kind 'explode'; expected one of delay_ms, error, reject"),
        ("scheduler:error:2", "error must be a probability from 0 to 1, got '2'"),
        ("scheduler:reject:-0.1", "reject must be a probability from 0 to 1"),
        ("scheduler:error:often", "error must be a probability from 0 to 1, got 'often'"),
        ("delivery:delay_ms:-5", "delay_ms must be a number from 0 to 600000"),
        ("delivery:delay_ms:nan", "delay_ms must be a number from 0 to 600000"),
        ("delivery:error:0.1,delivery:error:0.2", "delivery:error is given twice"),
    ],
)
def test_an_invalid_fault_spec_names_the_bad_item(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Faults.parse(spec)
    assert str(caught.value).startswith("DRONE_DELIVERY_FAULTS: invalid item")
    assert message in str(caught.value)


async def test_injected_faults_follow_their_probabilities() -> None:
    rng = random.Random(3)
    errors = 0
    for _ in range(1000):
        try:
            await ServiceFaults(error_probability=0.2).inject(rng, "test")
        except InjectedFault:
            errors += 1
    assert 150 < errors < 250
    with pytest.raises(Reject, match="injected fault: here rejected the event"):
        await ServiceFaults(reject_probability=1).inject(rng, "here")
    await ServiceFaults(error_probability=0).inject(rng, "never")


# ------------------------------------------------------------------------------- business rules


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        ({"packageId": "p", "size": "small", "weight": 25}, None),
        ({"packageId": "p", "size": "large", "weight": 0.1}, None),
        ({"packageId": "p", "size": "small", "weight": 25.5}, "weight 25.5 kg is over the 25 kg"),
        ({"packageId": "p", "size": "tiny", "weight": 1}, "size 'tiny' is not one of small"),
        ({"packageId": "p", "size": "small", "weight": -1}, "weight -1 is not a positive"),
        ({"packageId": "p", "size": "small"}, "weight None is not a positive"),
    ],
)
def test_package_rules(info: dict[str, Any], problem: str | None) -> None:
    found = package_problem(info, max_weight_kg=25)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_the_fleet_mixes_capacities_in_a_fixed_order() -> None:
    drones = fleet(4)

    assert [drone["droneId"] for drone in drones] == [
        "drone-001",
        "drone-002",
        "drone-003",
        "drone-004",
    ]
    assert [drone["capacity"] for drone in drones] == [5, 10, 25, 5]
    assert all(drone["heldBy"] is None for drone in drones)


# ------------------------------------------------------------------------------- status model


def event(event_type: str, event_id: str, **data: Any) -> CloudEvent:
    return CloudEvent(
        id=event_id,
        type=event_type,
        source="/test",
        data={"deliveryId": "d-1", **data},
        extensions={"correlationid": "d-1"},
    )


def run(*events: CloudEvent) -> dict[str, Any]:
    record = None
    for item in events:
        record, _ = apply_event(record, item, timeout_reason="timed out")
    assert record is not None
    return record


def test_progress_only_moves_forward_whatever_the_order() -> None:
    record = run(
        event("DeliveryRequested", "1"),
        event("DeliveryScheduled", "4", droneId="drone-002", eta="E", revision=0),
        event("DroneAssigned", "3", droneId="drone-002"),
        event("PackageCreated", "2"),
    )

    assert record["status"] == "Scheduled"
    assert record["droneId"] == "drone-002"
    assert record["eta"] == "E"
    assert [entry["eventId"] for entry in record["history"]] == ["1", "4", "3", "2"]


def test_a_final_status_is_never_overwritten() -> None:
    record = run(
        event("DeliveryRequested", "1"),
        event("PackageRejected", "2", reason="too heavy"),
        event("DeliveryScheduled", "3", droneId="drone-001", eta="E", revision=0),
        event("DeliveryCancelled", "4", reason="bye"),
        event("DroneDeliveryTimedOut", "5"),
    )

    assert record["status"] == "Failed"
    assert record["failureReason"] == "too heavy"
    assert record["droneId"] is None
    assert len(record["history"]) == 5


def test_a_failure_after_scheduling_fails_the_delivery() -> None:
    record = run(
        event("DeliveryScheduled", "1", droneId="drone-001", eta="E", revision=0),
        event("DroneDeliveryTimedOut", "2"),
    )

    assert record["status"] == "Failed"
    assert record["failureReason"] == "timed out"


def test_a_repeated_event_is_recorded_once() -> None:
    first = event("PackageCreated", "2")
    record, entry = apply_event(run(event("DeliveryRequested", "1")), first, timeout_reason="")
    assert entry is not None
    record, entry = apply_event(record, first, timeout_reason="")

    assert entry is None
    assert len(record["history"]) == 2


def test_the_newest_reschedule_wins() -> None:
    record = run(
        event("DeliveryRequested", "1"),
        event("DeliveryScheduled", "2", droneId="drone-001", eta="E2", revision=2),
        event("DeliveryScheduled", "3", droneId="drone-001", eta="E1", revision=1),
        event("DeliveryRescheduled", "4", pickupTime="P2", revision=2),
        event("DeliveryRescheduled", "5", pickupTime="P1", revision=1),
    )

    assert record["eta"] == "E2"
    assert record["pickupTime"] == "P2"
    assert record["revision"] == 2


# ------------------------------------------------------------------------------- declarations


def test_the_declared_choreography_has_no_loose_ends() -> None:
    graph = workflow_graph(declarations())

    assert graph.warnings == []
    assert sorted(graph.services) == [
        "bus",
        "delivery",
        "ingestion",
        "monitor",
        "package",
        "scheduler",
    ]
    consumers: dict[str, set[str]] = {}
    for edge in graph.edges:
        consumers.setdefault(edge.event_type, set()).add(edge.target)
    everyone = {"ingestion", "package", "scheduler", "delivery"}
    assert consumers["PackageRejected"] == {"ingestion"}  # nothing was created
    assert consumers["DroneAssignmentFailed"] == everyone - {"scheduler"}
    assert consumers["DeliverySchedulingFailed"] == everyone - {"delivery"}
    assert consumers["DeliveryCancelled"] == everyone
    assert consumers["DroneDeliveryTimedOut"] == everyone
