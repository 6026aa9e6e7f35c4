"""The rule for changing an event (ARCHITECTURE.md), checked against the shapes pinned
in ``tests/data/event-shapes.json``: under one stored topic a payload may only gain
fields with a default; a rename, a removal, a new required field or a changed type needs
a new class version (``class_version`` + ``upcast_vN_vN+1``), pinned under its own
topic. No pinned topic is ever dropped (old logs hold them).

Print the current shapes (to pin a new topic, or a change that only widens what a field
accepts): ``python tests/unit/test_event_shapes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from tierlog.adapters.store.codec import EventCodec, topic_of
from tierlog.domain import events as ev

PINNED = Path(__file__).parents[1] / "data" / "event-shapes.json"


def _bare(schema: Any) -> Any:
    """A JSON schema without its titles and descriptions (docstrings are not shapes)."""
    if isinstance(schema, dict):
        return {k: _bare(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_bare(v) for v in schema]
    return schema


def shapes() -> dict[str, Any]:
    """Every current event type's payload shape, by stored topic (as JSON has it)."""
    found = {topic_of(t): _bare(msgspec.json.schema(t))["$defs"] for t in ev.EVENT_TYPES}
    result: dict[str, Any] = json.loads(json.dumps(found))
    return result


def breaks(pinned: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What in ``current`` would fail to read a payload of the ``pinned`` shape (both
    are the ``$defs`` of one event: its own struct and the structs it nests)."""
    found = []
    for struct, old in pinned.items():
        new = current.get(struct)
        if new is None:
            found.append(f"{struct} is gone")
            continue
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        for name, schema in old_fields.items():
            if name not in new_fields:
                found.append(f"{struct}.{name} was removed or renamed")
            elif new_fields[name] != schema:
                found.append(f"{struct}.{name} changed: {schema} -> {new_fields[name]}")
        for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
            found.append(f"{struct}.{name} is required but old payloads lack it (add a default)")
    return found


def test_every_event_keeps_the_shape_pinned_for_its_topic():
    pinned, current = json.loads(PINNED.read_text()), shapes()
    unpinned = sorted(current.keys() - pinned.keys())
    assert not unpinned, (
        f"pin the shape of {unpinned} in {PINNED.name} (python {Path(__file__).name})"
    )
    found = [f"{t}: {b}" for t in current for b in breaks(pinned[t], current[t])]
    assert not found, (
        "a stored payload changed shape without a new class version: bump class_version "
        "and add upcast_vN_vN+1 (ARCHITECTURE.md)\n" + "\n".join(found)
    )


def test_no_pinned_topic_is_ever_dropped():
    codec = EventCodec()
    assert all(codec.event_type(topic) is not None for topic in json.loads(PINNED.read_text()))


def test_the_rule_tells_a_compatible_change_from_a_breaking_one():
    pinned = {"E": {"properties": {"a": {"type": "string"}}, "required": ["a"]}}
    added = {"E": {"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}
    assert breaks(pinned, added | {"E": {**added["E"], "required": ["a"]}}) == []
    renamed = {"E": {"properties": {"z": {"type": "string"}}, "required": ["z"]}}
    assert breaks(pinned, renamed) == [
        "E.a was removed or renamed",
        "E.z is required but old payloads lack it (add a default)",
    ]
    retyped = {"E": {"properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    assert breaks(pinned, retyped) == ["E.a changed: {'type': 'string'} -> {'type': 'integer'}"]
    assert breaks(pinned, {}) == ["E is gone"]


if __name__ == "__main__":
    print(json.dumps(shapes(), indent=1, sort_keys=True))
