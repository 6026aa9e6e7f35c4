"""msgspec codec for events: one encoder and one decoder per event type, built once.

Stored topics are each event type's declared ``stored_name`` (``TaskSubmitted``) with
``@N`` appended for class versions above 1, so moving or renaming a module or a class
never changes them. Logs written before stored names existed hold the module path
(``domain.events:TaskSubmitted``, ``...@N``): ``LEGACY_ALIASES`` maps those to the
stored names, and they decode through the same decoders. Stored rows are never
rewritten (the hash chain covers their topic text). An older stored version is decoded
to a dict, upcast one step at a time by ``upcast_vN_vN+1`` static methods on the event
class, then converted to the current type. A topic from the future (a class version
above the current one, or a stored name this release does not know) raises
``NewerEventError``: "written by a newer tierlog (TaskSubmitted@9)".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from tierlog.domain.errors import StoreError, UndecodableEventError
from tierlog.domain.events import EVENT_TYPES, DomainEvent, check_stored_names

# A topic as this and later releases write it: a stored name, then "@N" above version 1.
_VERSION = "[1-9][0-9]{0,8}"
_TOPIC = re.compile(rf"[A-Za-z][A-Za-z0-9_]*(?:@{_VERSION})?")


class NewerEventError(StoreError, msgspec.DecodeError):
    """The log holds an event this release cannot know: a later class version of a
    known type, or a type added later. A tierlog error (one line, exit 2 at the CLI)
    and a decode error (what every reader of the log already expects)."""

    code = "written_by_newer_tierlog"

    def __init__(self, topic: str, known: str) -> None:
        super().__init__(
            f"written by a newer tierlog ({topic}): {known}; "
            "read this log with that release or a later one"
        )
        self.topic = topic


def _enc_hook(obj: Any) -> Any:
    # freezegun's FakeDatetime (a datetime subclass) reaches here; encode it as a datetime.
    if isinstance(obj, datetime):
        return datetime.isoformat(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} in an event")


class _MsgspecJSONTranscoder(Transcoder):
    """eventsourcing's transcoder interface over msgspec JSON (for non-event payloads)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return msgspec.json.decode(data)


# The event types of tierlog 0.1.0 before stored names existed (up to commit 3f67fcf),
# which stored the module path of the class as the topic. History: never edit an entry;
# a later change of spelling adds its own aliases.
_NAMES_0_1_0 = (
    "TaskSubmitted",
    "TaskClassified",
    "TaskRouted",
    "TaskAssigned",
    "TaskHeartbeated",
    "TaskCompleted",
    "TaskFailed",
    "TaskReclaimed",
    "TaskEscalated",
    "TaskRequeued",
    "TaskDeadLettered",
    "TaskRetried",
    "TaskCancelled",
    "FallbackTimerStarted",
    "FallbackTimerFired",
    "FallbackTimerCancelled",
    "SchedulerConfigured",
    "AgentRegistered",
    "AgentReserved",
    "AgentWentOffline",
    "AgentDeregistered",
    "EndpointRegistered",
    "EndpointHealthReported",
    "EndpointResourcesReported",
    "EndpointDeregistered",
)

LEGACY_ALIASES: Mapping[str, str] = MappingProxyType(
    {f"domain.events:{name}": name for name in _NAMES_0_1_0}
)
"""Old stored topic (without ``@N``) -> the stored name it decodes as."""


def _versioned(base: str, version: int) -> str:
    return base if version == 1 else f"{base}@{version}"


def topic_of(event_type: type[DomainEvent]) -> str:
    """The stored topic of an event type: its stored name, with its class version when
    above 1."""
    return _versioned(event_type.stored_name, event_type.class_version)


class _RoundTrip(msgspec.Struct, frozen=True):
    """How an event type is checked before it is appended: its own float fields
    (``direct``) looked at, and the fields that may not come back as they went
    (``compare``: free-form values, floats nested deeper) decoded back and compared
    when they hold anything."""

    decoder: msgspec.json.Decoder[Any]
    compare: tuple[str, ...]
    direct: tuple[str, ...] = ()


_FLOATS: tuple[type[msgspec.inspect.Type], ...] = (msgspec.inspect.FloatType,)
_NONE = msgspec.inspect.NoneType


def _holds(info: msgspec.inspect.Type, wanted: tuple[type[msgspec.inspect.Type], ...]) -> bool:
    """Whether a value of type ``info`` can hold a value of a ``wanted`` kind."""
    seen: set[Any] = set()
    pending = [info]
    while pending:
        info = pending.pop()
        if isinstance(info, wanted):
            return True
        if isinstance(info, msgspec.inspect.StructType):
            if wanted == _FLOATS and getattr(info.cls, "finite_floats", False):
                continue  # its floats are checked where it is built: no NaN to fear
            if info.cls not in seen:
                seen.add(info.cls)
                pending.extend(f.type for f in info.fields)
        elif isinstance(info, msgspec.inspect.UnionType):
            pending.extend(info.types)
        elif isinstance(info, msgspec.inspect.DictType):
            pending.extend((info.key_type, info.value_type))
        elif isinstance(info, msgspec.inspect.TupleType):
            pending.extend(info.item_types)
        elif isinstance(info, msgspec.inspect.CollectionType):
            pending.append(info.item_type)
    return False


def _is_own_float(info: msgspec.inspect.Type) -> bool:
    """Whether a field of type ``info`` holds a float itself (or None), nothing deeper."""
    if isinstance(info, msgspec.inspect.FloatType):
        return True
    return isinstance(info, msgspec.inspect.UnionType) and all(
        isinstance(t, msgspec.inspect.FloatType | _NONE) for t in info.types
    )


def _round_trip(event_type: type[DomainEvent], decoder: Any) -> _RoundTrip | None:
    """What must be checked of an ``event_type`` event before it is appended, or None
    when its type alone proves it round-trips. A float can be NaN or infinite, which
    JSON writes as null: a field that is a float (or None) is looked at as it is, one
    that holds floats deeper is decoded back and compared (a struct whose floats are
    checked where it is built, ``finite_floats``, needs neither). A free-form value
    (``Any``: ``metadata``, ``result``) is decoded back and compared too."""
    try:
        info = msgspec.inspect.type_info(event_type)
    except (NameError, KeyError, TypeError):  # annotations it cannot resolve: check all
        return _RoundTrip(decoder, event_type.__struct_fields__)
    assert isinstance(info, msgspec.inspect.StructType)
    # An event whose floats are checked where it is built: only free-form values remain.
    floats = not getattr(event_type, "finite_floats", False)
    direct = tuple(f.name for f in info.fields if floats and _is_own_float(f.type))
    compare = tuple(
        f.name
        for f in info.fields
        if f.name not in direct
        and (_holds(f.type, (msgspec.inspect.AnyType,)) or (floats and _holds(f.type, _FLOATS)))
    )
    if direct or compare:
        return _RoundTrip(decoder, compare, direct)
    return None


def _holds_something(value: Any) -> bool:
    """Whether a value may differ once decoded: not None, and not an empty container."""
    return value is not None and not (isinstance(value, dict | list | tuple) and not value)


def _same(stored: Any, given: Any) -> bool:
    # Equal, or equal as plain data: a tuple comes back a list (the same JSON).
    return bool(stored == given) or _plain(stored) == _plain(given)


def _real_datetime(obj: Any) -> Any:
    # A datetime subclass (freezegun's) as a plain datetime, compared as a datetime.
    if isinstance(obj, datetime):
        return datetime.combine(obj.date(), obj.timetz())
    raise TypeError(f"cannot encode {type(obj).__name__} in an event")


def _plain(value: Any) -> Any:
    """``value`` as plain data to compare: times stay times, whatever their spelling."""
    return msgspec.to_builtins(value, builtin_types=(datetime,), enc_hook=_real_datetime)


def _upcaster(version: int) -> str:
    return f"upcast_v{version}_v{version + 1}"


def check_upcasters(event_type: type[DomainEvent]) -> None:
    """Raise ``TypeError`` unless every version of ``event_type`` below its current one
    has its ``upcast_vN_vN+1`` static method (the rule for changing an event: see
    ARCHITECTURE.md)."""
    missing = [
        _upcaster(v)
        for v in range(1, event_type.class_version)
        if not callable(getattr(event_type, _upcaster(v), None))
    ]
    if missing:
        raise TypeError(
            f"event type {event_type.__qualname__} is at class version "
            f"{event_type.class_version} but has no {', '.join(missing)}"
        )


class EventCodec:
    """Encodes events to canonical JSON bytes and back."""

    def __init__(
        self,
        event_types: tuple[type[DomainEvent], ...] = EVENT_TYPES,
        aliases: Mapping[str, str] = LEGACY_ALIASES,
    ) -> None:
        check_stored_names(event_types)
        for event_type in event_types:
            check_upcasters(event_type)
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self._topics = {t: topic_of(t) for t in event_types}
        by_name = {t.stored_name: t for t in event_types}
        # Stored name or alias (without "@N") -> event type; aliases of types this codec
        # was not given are left out.
        self._by_base: dict[str, type[DomainEvent]] = by_name | {
            old: by_name[name] for old, name in aliases.items() if name in by_name
        }
        decoders = {t: msgspec.json.Decoder(t) for t in event_types}
        # Types whose events are decoded back before they are appended.
        self._round_trip = {
            t: check for t in event_types if (check := _round_trip(t, decoders[t])) is not None
        }
        # The current class version under either spelling: one shared decoder, no upcast.
        self._decoders = {
            _versioned(base, t.class_version): decoders[t] for base, t in self._by_base.items()
        }

    def topic(self, event: DomainEvent) -> str:
        """The stored topic of ``event``."""
        return self._topics[type(event)]

    def encode(self, event: DomainEvent) -> bytes:
        """Canonical bytes of ``event`` (fields in declaration order, no white space)."""
        return self._encoder.encode(event)

    def encode_checked(self, event: DomainEvent) -> bytes:
        """``encode(event)``, once it is known to decode back to the same event: an event
        the log could not give back is refused with ``UndecodableEventError`` naming its
        type (checked by decoding it, for the types that are not safe by construction)."""
        name = type(event).stored_name
        try:
            data = self._encoder.encode(event)
            check = self._round_trip.get(type(event))
            if check is None:
                return data
            for field in check.direct:
                value = getattr(event, field)
                if value is not None and not math.isfinite(value):
                    raise ValueError(f"{field} is {value} (JSON writes it as null)")
            # Most submissions carry no metadata: nothing is left that could come back
            # otherwise, and the decoding is skipped.
            compare = [f for f in check.compare if _holds_something(getattr(event, f))]
            if not compare:
                return data
            decoded = check.decoder.decode(data)
            if all(_same(getattr(decoded, f), getattr(event, f)) for f in compare):
                return data
            reason = "it decodes as a different event (a NaN or infinite number?)"
        except (msgspec.MsgspecError, TypeError, ValueError, OverflowError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        raise UndecodableEventError(f"refused to append a {name} event: {reason}", field=name)

    def decode(self, topic: str, data: bytes) -> DomainEvent:
        """The event stored under ``topic``, upcast to the current class version."""
        decoder = self._decoders.get(topic)
        if decoder is not None:
            event: DomainEvent = decoder.decode(data)
            return event
        return self._decode_old(topic, data)

    def event_type(self, topic: str) -> type[DomainEvent] | None:
        """The event class stored under ``topic`` (any class version, new or legacy
        spelling), or None."""
        return self._by_base.get(topic.partition("@")[0])

    def decoder(self, topic: str) -> Callable[[bytes], DomainEvent]:
        """The function that decodes payloads stored under ``topic`` (what ``decode``
        does, without the lookup per call: for loops over many events of few topics).
        An unknown topic gives a function that raises ``msgspec.DecodeError``."""
        decoder = self._decoders.get(topic)
        if decoder is not None:
            decode: Callable[[bytes], DomainEvent] = decoder.decode
            return decode
        return partial(self._decode_old, topic)

    def _decode_old(self, topic: str, data: bytes) -> DomainEvent:
        event_type, version = self._parse(topic)
        state: dict[str, Any] = msgspec.json.decode(data)
        while version < event_type.class_version:
            getattr(event_type, _upcaster(version))(state)
            version += 1
        result: DomainEvent = msgspec.convert(state, event_type, strict=False)
        return result

    def _parse(self, topic: str) -> tuple[type[DomainEvent], int]:
        """The event type and class version a topic names; a topic of a later release
        raises ``NewerEventError``, any other unknown one ``msgspec.DecodeError``."""
        base, at, version_text = topic.partition("@")
        event_type = self._by_base.get(base)
        if event_type is None:
            if _TOPIC.fullmatch(topic):  # shaped like a topic: a type added after this release
                raise NewerEventError(topic, f"unknown event topic {topic!r}")
            raise msgspec.DecodeError(f"unknown event topic {topic!r}")
        if at and not re.fullmatch(_VERSION, version_text):
            raise msgspec.DecodeError(f"unknown event topic {topic!r}")
        version = int(version_text or 1)
        if version > event_type.class_version:
            known = f"this one reads {event_type.stored_name} up to version"
            raise NewerEventError(topic, f"{known} {event_type.class_version}")
        return event_type, version


def why_undecodable(topic: str, exc: BaseException) -> str:
    """One line saying that an event stored under ``topic`` does not decode, and why
    (a forged payload can make the reason long or many lines: it is cut short)."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    return f"{topic} does not decode: {reason}"


class MsgspecMapper(Mapper[UUID]):
    """eventsourcing ``Mapper`` that stores events as msgspec JSON."""

    def __init__(self, codec: EventCodec | None = None) -> None:
        super().__init__(transcoder=_MsgspecJSONTranscoder())
        self.codec = codec or EventCodec()

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Map an event to the stored form."""
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=self.codec.topic(domain_event),
            state=self.codec.encode_checked(domain_event),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """Map a stored event back to a domain event."""
        return self.codec.decode(stored_event.topic, stored_event.state)
