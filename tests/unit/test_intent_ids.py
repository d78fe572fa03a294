"""Order-intent ids: deterministic, and unambiguous whatever the ids they are made of."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.harness import small_system
from valux.schema.messages import intent_id_for

_ids = st.text(alphabet=st.sampled_from('ab:1\\",[] '), max_size=6)


def test_the_same_decision_gets_the_same_id() -> None:
    """A retried decision is the same intent."""
    assert intent_id_for("buy", "sig", "alice") == intent_id_for("buy", "sig", "alice")


def test_colons_in_ids_cannot_make_two_decisions_collide() -> None:
    """Signal ``tv:123`` for ``alice`` and signal ``tv`` for ``123:alice`` differ (the
    joined encoding gave both ``buy:tv:123:alice``)."""
    assert intent_id_for("buy", "tv:123", "alice") != intent_id_for("buy", "tv", "123:alice")


@given(_ids, _ids, _ids, _ids)
def test_different_parts_give_different_ids(a: str, b: str, c: str, d: str) -> None:
    """Injective over the parts: equal ids only for equal (kind, parts)."""
    if (a, b) != (c, d):
        assert intent_id_for("buy", a, b) != intent_id_for("buy", c, d)


async def test_agents_alice_and_123_alice_open_four_positions() -> None:
    """The issue's reproduction: agents ``alice`` and ``123:alice``, signal ``tv:123`` on
    one token and signal ``tv`` on another: four buys, four positions."""
    system = await small_system()
    await system.add_agent("alice")
    await system.add_agent("123:alice")
    system.price("TKA", 1.0)
    system.price("TKB", 1.0)
    first = await system.signal("tv:123", token="TKA")
    second = await system.signal("tv", token="TKB")
    assert [o["status"] for o in first + second] == ["bought"] * 4
    positions = {p for a in system.agents.entities.values() for p in a.positions}
    assert len(positions) == 4


def test_journaled_ids_of_the_old_encoding_are_kept() -> None:
    """The old ``":".join`` ids are valid UUIDs that nothing recomputes: a journal holding
    them replays (tests/unit/test_event_upgrades.py replays one)."""
    old = str(uuid.uuid5(uuid.UUID("5a1c7e2e-9b1f-4d0e-8a57-76616c757821"), "buy:s:a"))
    assert old != intent_id_for("buy", "s", "a")
