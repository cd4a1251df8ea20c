"""Rhythm events on the device's wire (issue 13 item 2): the outbox never
drops an event before a routine message, the ``event`` message, and the
device loop publishing the monitor's events."""

from __future__ import annotations

from firmware.net.outbox import Outbox


def _publish_all(box: Outbox) -> list[bytes]:
    sent = []
    box.send_some(lambda t, p, r: sent.append(p) or len(sent), 100)
    return sent


def test_full_outbox_drops_routine_messages_before_kept_events():
    box = Outbox(4)
    box.push("v", b"v1", False)
    box.push("e", b"e1", False, True)
    box.push("v", b"v2", False)
    box.push("v", b"v3", False)
    box.push("v", b"v4", False)  # full: v1 goes
    box.push("v", b"v5", False)  # v2 goes, e1 stays although it is older
    assert [p for _, p, _ in box.entries()] == [b"e1", b"v3", b"v4", b"v5"]
    assert box.dropped == 2 and box.dropped_kept == 0


def test_outbox_of_kept_events_drops_the_oldest_and_counts_it():
    box = Outbox(2)
    for i in range(3):
        box.push("e", b"e%d" % i, False, True)
    assert [p for _, p, _ in box.entries()] == [b"e1", b"e2"]
    assert box.dropped == 1 and box.dropped_kept == 1


def test_in_flight_routine_message_dropped_keeps_the_count_right():
    box = Outbox(3)
    box.push("e", b"e1", False, True)
    box.push("v", b"v1", False)
    box.push("v", b"v2", False)
    assert _publish_all(box) == [b"e1", b"v1", b"v2"]
    assert box.inflight == 3
    box.push("e", b"e2", False, True)  # v1 (in flight) is dropped
    assert box.inflight == 2
    assert [p for _, p, _ in box.entries()] == [b"e1", b"v2", b"e2"]
    box.ack(1)  # e1's token
    assert [p for _, p, _ in box.entries()] == [b"v2", b"e2"]
    box.ack(3)
    assert box.inflight == 0 and len(box) == 1
