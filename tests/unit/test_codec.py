from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar
from uuid import uuid4

import msgspec
import pytest
from event_factories import ThingHappenedV2, completed_with
from freezegun import freeze_time

from tierlog.adapters.store.codec import (
    LEGACY_ALIASES,
    EventCodec,
    MsgspecMapper,
    NewerEventError,
    check_upcasters,
    topic_of,
)
from tierlog.domain import commands as cmd
from tierlog.domain import events as ev
from tierlog.domain.aggregates.task import submitted_event
from tierlog.domain.config import SchedulerConfig
from tierlog.domain.errors import TierlogError, UndecodableEventError

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class TaskCancelled(ev.DomainEvent, frozen=True, kw_only=True):
    """The shape and class name of ``ev.TaskCancelled``, defined in another module."""

    stored_name: ClassVar[str] = "ElsewhereCancelled"
    reason: str
    requested_by: str


def _cancelled(event_type: type[ev.DomainEvent] = ev.TaskCancelled) -> Any:
    return event_type(
        originator_id=uuid4(), originator_version=7, timestamp=NOW, reason="x", requested_by="op"
    )


def _thing_v1() -> bytes:
    return (
        b'{"originator_id":"%s","originator_version":1,"timestamp":"2026-01-01T00:00:00Z",'
        b'"label":"old"}' % str(uuid4()).encode()
    )


def test_every_event_type_round_trips():
    codec = EventCodec()
    event = _cancelled()
    assert codec.decode(codec.topic(event), codec.encode(event)) == event
    assert topic_of(ev.TaskCancelled) == codec.topic(event) == "TaskCancelled"


def test_every_event_type_has_its_own_stored_name():
    names = [t.stored_name for t in ev.EVENT_TYPES]
    assert len(set(names)) == len(names) == 28
    assert all(":" not in n and "@" not in n for n in names)
    assert {topic_of(t) for t in ev.EVENT_TYPES} == set(names)  # all at class version 1
    # Each type declares its name itself (none inherited from the base).
    assert all("stored_name" in vars(t) for t in ev.EVENT_TYPES)


def test_every_type_of_release_0_1_0_keeps_its_name():
    # Stored names are never renamed: each legacy alias still names a type. Release
    # 0.1.0 had 25 event types; types added since (SchedulerLeaderElected) have no alias.
    assert set(LEGACY_ALIASES.values()) <= {t.stored_name for t in ev.EVENT_TYPES}
    assert set(LEGACY_ALIASES) == {f"domain.events:{name}" for name in LEGACY_ALIASES.values()}
    assert len(LEGACY_ALIASES) == 25


def test_an_event_type_without_its_own_name_is_refused():
    with pytest.raises(TypeError, match="must declare its own stored_name"):

        class Nameless(ev.DomainEvent, frozen=True, kw_only=True):
            reason: str

    with pytest.raises(TypeError, match="must declare its own stored_name"):

        class Inherits(ev.TaskCancelled, frozen=True, kw_only=True):
            extra: int

    for bad in ("", "domain.events:X", "X@2", "9Lives", "a b"):
        with pytest.raises(TypeError, match="must declare its own stored_name"):
            type(
                "Bad",
                (ev.DomainEvent,),
                {"stored_name": bad, "__annotations__": {"stored_name": "ClassVar[str]"}},
                frozen=True,
                kw_only=True,
            )


def test_two_types_with_one_name_are_refused():
    class Twin(ev.DomainEvent, frozen=True, kw_only=True):
        stored_name: ClassVar[str] = "TaskCancelled"

    with pytest.raises(TypeError, match="both stored as 'TaskCancelled'"):
        ev.check_stored_names((*ev.EVENT_TYPES, Twin))
    with pytest.raises(TypeError, match="both stored as 'TaskCancelled'"):
        EventCodec((ev.TaskCancelled, Twin))


def test_names_do_not_depend_on_module_or_class_paths(monkeypatch):
    before = {t: topic_of(t) for t in ev.EVENT_TYPES}
    # A class of the same name and shape elsewhere changes no topic.
    codec = EventCodec((*ev.EVENT_TYPES, TaskCancelled))
    assert {t: codec.topic(_cancelled(t)) for t in (ev.TaskCancelled, TaskCancelled)} == {
        ev.TaskCancelled: "TaskCancelled",
        TaskCancelled: "ElsewhereCancelled",
    }
    assert {t: topic_of(t) for t in ev.EVENT_TYPES} == before
    event = _cancelled()
    assert type(codec.decode("TaskCancelled", codec.encode(event))) is ev.TaskCancelled
    assert codec.event_type("domain.events:TaskCancelled") is ev.TaskCancelled
    # Moving or renaming the class changes nothing stored.
    monkeypatch.setattr(ev.TaskCancelled, "__module__", "tierlog.somewhere.else")
    qualname = ev.TaskCancelled.__qualname__  # a type slot: monkeypatch would delete it
    ev.TaskCancelled.__qualname__ = "CancelledTask"
    try:
        moved = EventCodec()
        assert {t: topic_of(t) for t in ev.EVENT_TYPES} == before
    finally:
        ev.TaskCancelled.__qualname__ = qualname
    assert moved.topic(event) == "TaskCancelled"
    for topic in ("TaskCancelled", "domain.events:TaskCancelled"):
        assert moved.decode(topic, codec.encode(event)) == event


def test_every_legacy_topic_decodes_through_the_same_fast_paths():
    codec = EventCodec()
    for old, name in LEGACY_ALIASES.items():
        event_type = codec.event_type(name)
        assert event_type is not None and event_type.stored_name == name
        assert codec.event_type(old) is event_type
        # The decoder of the current version, shared (not the upcasting slow path).
        fast = codec.decoder(name)
        assert isinstance(fast.__self__, msgspec.json.Decoder)  # type: ignore[attr-defined]
        assert codec.decoder(old).__self__ is fast.__self__  # type: ignore[attr-defined]
    event = _cancelled()
    for topic in ("domain.events:TaskCancelled", "domain.events:TaskCancelled@1"):
        assert codec.decode(topic, codec.encode(event)) == event
        assert codec.decoder(topic)(codec.encode(event)) == event


def test_old_versions_are_upcast_on_read():
    codec = EventCodec((ThingHappenedV2,))
    old = _thing_v1()
    base = topic_of(ThingHappenedV2).split("@")[0]
    event = codec.decode(base, old)
    assert isinstance(event, ThingHappenedV2)
    assert (event.name, event.size) == ("old", 0)
    assert topic_of(ThingHappenedV2) == "ThingHappened@2"


def test_legacy_versioned_topics_upcast_and_decode():
    codec = EventCodec((ThingHappenedV2,), aliases={"domain.events:ThingHappened": "ThingHappened"})
    for topic in ("domain.events:ThingHappened", "domain.events:ThingHappened@1"):
        upcast = codec.decode(topic, _thing_v1())
        assert isinstance(upcast, ThingHappenedV2) and (upcast.name, upcast.size) == ("old", 0)
        assert codec.decoder(topic)(_thing_v1()).name == "old"  # type: ignore[attr-defined]
    current = ThingHappenedV2(
        originator_id=uuid4(), originator_version=2, timestamp=NOW, name="new", size=3
    )
    data = codec.encode(current)
    assert codec.decode("domain.events:ThingHappened@2", data) == current
    assert codec.decoder("domain.events:ThingHappened@2")(data) == current
    assert codec.event_type("domain.events:ThingHappened@2") is ThingHappenedV2
    # An alias of a type the codec was not given is no topic at all.
    assert EventCodec((ev.TaskCancelled,)).event_type("domain.events:TaskSubmitted") is None


@pytest.mark.parametrize(
    "topic",
    ["domain.events:Nope", "Nope", "domain.events:Nope@2", "tierlog.domain.events:TaskCancelled"],
)
def test_unknown_topic_is_a_decode_error(topic):
    codec = EventCodec()
    assert codec.event_type(topic) is None
    with pytest.raises(msgspec.DecodeError, match="unknown event topic"):
        codec.decode(topic, b"{}")
    with pytest.raises(msgspec.DecodeError, match="unknown event topic"):
        codec.decoder(topic)(b"{}")


def test_freezegun_datetimes_encode():
    mapper = MsgspecMapper()
    with freeze_time("2026-05-06T07:08:09Z"):
        event = ev.TaskDeadLettered(
            originator_id=uuid4(), originator_version=1, timestamp=datetime.now(UTC), reason="r"
        )
        stored = mapper.to_stored_event(event)
    assert stored.topic == "TaskDeadLettered"
    assert b"2026-05-06T07:08:09" in stored.state
    assert mapper.to_domain_event(stored) == event


# --- nothing that would not decode back is encoded for the append -----------------------


def _completed(result: Any) -> ev.TaskCompleted:
    return completed_with(result, NOW, version=4)


@pytest.mark.parametrize("result", [float("nan"), {"x": [float("inf")]}, "\ud800", {"k": object()}])
def test_an_event_that_would_not_decode_back_is_refused_naming_its_type(result):
    with pytest.raises(UndecodableEventError, match="refused to append a TaskCompleted") as info:
        EventCodec().encode_checked(_completed(result))
    assert info.value.field == "TaskCompleted"


def test_a_configuration_with_a_non_finite_wait_is_refused_before_it_is_recorded():
    # SchedulerConfig refuses NaN itself; a value slipped past it (forced in here) must
    # still not reach the log, where it would be written as null.
    config = SchedulerConfig()
    msgspec.structs.force_setattr(config, "lease_s", float("nan"))
    configured = ev.SchedulerConfigured(
        originator_id=uuid4(), originator_version=1, timestamp=NOW, config=config
    )
    with pytest.raises(UndecodableEventError, match="SchedulerConfigured"):
        EventCodec().encode_checked(configured)


def _submitted(**fields: Any) -> ev.TaskSubmitted:
    event = submitted_event(cmd.SubmitTask(description="fix typo"), uuid4(), NOW, None)
    return msgspec.structs.replace(event, **fields)


@pytest.mark.parametrize("field", ["retry_backoff_s", "retry_backoff_max_s"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_submission_with_a_non_finite_backoff_is_refused_naming_the_field(field, bad):
    # An optional float written as null would decode as None: the event is looked at
    # itself, with or without metadata beside it.
    for metadata in ({}, {"team": "web"}):
        with pytest.raises(UndecodableEventError, match=f"TaskSubmitted.*{field} is") as info:
            EventCodec().encode_checked(_submitted(metadata=metadata, **{field: bad}))
        assert info.value.field == "TaskSubmitted"


@pytest.mark.parametrize("metadata", [{}, {"team": "web", "weights": [0.5, None]}])
def test_a_submission_with_or_without_metadata_is_encoded_as_before(metadata):
    codec = EventCodec()
    event = _submitted(metadata=metadata, retry_backoff_s=2.5)
    assert codec.encode_checked(event) == codec.encode(event)
    nan_inside = _submitted(metadata={"team": "web", "weights": [float("nan")]})
    with pytest.raises(UndecodableEventError, match="decodes as a different event"):
        codec.encode_checked(nan_inside)


def test_events_that_decode_back_are_encoded_as_before():
    codec = EventCodec()
    for event in (_completed({"ok": [1, 2.5, None, "x"]}), _cancelled()):
        assert codec.encode_checked(event) == codec.encode(event)


@pytest.mark.parametrize(
    ("topic", "says"),
    [
        ("TaskCancelled@2", "this one reads TaskCancelled up to version 1"),
        ("domain.events:TaskCancelled@3", "this one reads TaskCancelled up to version 1"),
        ("ThingHappened@3", "this one reads ThingHappened up to version 2"),
        ("TaskPrioritised", "unknown event topic 'TaskPrioritised'"),
        ("TaskPrioritised@4", "unknown event topic 'TaskPrioritised@4'"),
    ],
)
def test_a_topic_of_a_newer_release_says_so_in_one_line(topic, says):
    codec = EventCodec((*ev.EVENT_TYPES, ThingHappenedV2))
    for decode in (partial(codec.decode, topic), codec.decoder(topic)):
        with pytest.raises(NewerEventError) as newer:
            decode(codec.encode(_cancelled()))
        assert str(newer.value) == newer.value.message
        assert newer.value.message.startswith(f"written by a newer tierlog ({topic}): {says}")
        assert "\n" not in newer.value.message and newer.value.topic == topic
        # A decode error to the readers of the log, a tierlog error to the CLI (exit 2).
        assert isinstance(newer.value, msgspec.DecodeError)
        assert isinstance(newer.value, TierlogError) and newer.value.code


@pytest.mark.parametrize(
    "topic", ["TaskCancelled@0", "TaskCancelled@01", "TaskCancelled@x", "TaskCancelled@", "@2"]
)
def test_a_malformed_version_is_an_unknown_topic_not_a_newer_one(topic):
    with pytest.raises(msgspec.DecodeError, match="unknown event topic") as unknown:
        EventCodec().decode(topic, b"{}")
    assert not isinstance(unknown.value, NewerEventError)


def test_a_type_above_version_1_without_every_upcaster_is_refused():
    class Skipped(ev.DomainEvent, frozen=True, kw_only=True):
        stored_name: ClassVar[str] = "Skipped"
        class_version: ClassVar[int] = 3
        size: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["size"] = 0

    with pytest.raises(TypeError, match="Skipped is at class version 3 but has no upcast_v2_v3"):
        EventCodec((Skipped,))
    check_upcasters(ThingHappenedV2)  # complete: no error


# --- floats the domain computes are checked where they are built -----------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_value_objects_with_computed_floats_refuse_non_finite_ones(bad):
    with pytest.raises(ValueError, match="must be finite"):
        ev.CandidateScore(
            endpoint_id="e:1", score=bad, load=1.0, capacity=1.0, vram=1.0, warm=1.0, affinity=1.0
        )
    signals = ev.ClassificationSignals(word_count=1, file_count=0, verification_count=0)
    with pytest.raises(ValueError, match="must be finite"):
        ev.Classification(
            tier="standard",
            source="inferred",
            confidence=bad,
            signals=signals,
            heuristic_tier="standard",
            heuristic_confidence=0.5,
        )
    with pytest.raises(ValueError, match="must be finite"):
        ev.EndpointResourcesReported(
            originator_id=uuid4(),
            originator_version=1,
            timestamp=NOW,
            endpoint_id="e:1",
            cpu_percent=bad,
            ram_used_bytes=None,
            ram_total_bytes=None,
            vram_used_bytes=None,
            vram_total_bytes=None,
            repo=None,
        )


def test_only_events_that_types_cannot_prove_safe_are_decoded_back():
    checked = EventCodec()._round_trip
    # Floats computed by the domain are checked where they are built.
    for safe in (ev.TaskRouted, ev.TaskAssigned, ev.TaskClassified, ev.EndpointResourcesReported):
        assert safe not in checked
    # Free-form values are decoded back and compared, and so is a configuration (its
    # floats are deeper than the event's own fields); the event's own floats are looked
    # at as they are.
    assert checked[ev.TaskSubmitted].compare == ("metadata",)
    assert checked[ev.TaskSubmitted].direct == ("retry_backoff_s", "retry_backoff_max_s")
    assert checked[ev.TaskCompleted].compare == ("result",)
    assert checked[ev.SchedulerConfigured].compare == ("config",)


_SCORE = {"score": 1.0, "load": 0.5, "capacity": 1.5, "vram": 0.9, "warm": 1.15, "affinity": 1.05}


@pytest.mark.parametrize("field", sorted(_SCORE))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_float_of_a_candidate_score_is_checked_and_named(field, bad):
    with pytest.raises(ValueError, match=f"CandidateScore.{field} must be finite"):
        ev.CandidateScore(endpoint_id="e:1", **{**_SCORE, field: bad})


@pytest.mark.parametrize("field", ["confidence", "heuristic_confidence"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_float_of_a_classification_is_checked_and_named(field, bad):
    signals = ev.ClassificationSignals(word_count=1, file_count=0, verification_count=0)
    fields = {"confidence": 0.5, "heuristic_confidence": 0.5, field: bad}
    with pytest.raises(ValueError, match=f"Classification.{field} must be finite"):
        ev.Classification(
            tier="standard", source="inferred", signals=signals, heuristic_tier="standard", **fields
        )


def test_finite_extremes_and_zeros_are_accepted():
    extremes = {k: v for k, v in zip(_SCORE, [1e308, -1e308, 0.0, -0.0, 5e-324, 1], strict=True)}
    assert ev.CandidateScore(endpoint_id="e:1", **extremes).score == 1e308
