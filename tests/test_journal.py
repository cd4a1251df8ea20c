"""The device's message journal (firmware/net/journal.py): what a reboot, a torn write
or a compaction leaves, the outbox on top of it, and the same run in the MicroPython VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.device import Device, DeviceConfig
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState
from firmware.net.journal import Journal, start_seq
from firmware.net.links.memory import MemoryLink
from firmware.net.outbox import Outbox

SCRIPT = """
from firmware.net.journal import Journal
from firmware.net.outbox import Outbox

PATH = {path!r}
j = Journal(PATH, compact_after=4)
o = Outbox(3, j)
sent = []
def publish(topic, payload, retain):
    sent.append(payload)
    return len(sent) - 1
for seq in range(6):
    o.push("medge/v1/dev/d/vitals", b'{{"seq":%d}}' % seq, False, seq == 1, seq)
    o.send_some(publish, 2)
    if seq % 2 == 0:
        o.ack(len(sent) - 1)
print("dropped", o.dropped, "pending", [p for _, p, _ in o.entries()])
again = Journal(PATH)
print("next", again.next_seq, "recovered", [e[0] for e in again.pending], "torn", again.torn)
"""


def push_all(outbox: Outbox, seqs: range) -> None:
    for seq in seqs:
        outbox.push("t/x", b'{"seq":%d}' % seq, False, False, seq)


def test_a_reboot_recovers_the_next_number_and_what_was_not_acknowledged(tmp_path: Path) -> None:
    path = str(tmp_path / "d.journal")
    out = Outbox(8, Journal(path))
    push_all(out, range(5))
    tokens: list[int] = []
    out.send_some(lambda t, p, r: tokens.append(len(tokens)) or tokens[-1], 8)
    out.ack(0)
    out.ack(2)  # out of order: 1 is still pending
    # "SIGKILL": nothing closed, a new journal on the same file.
    back = Journal(path)
    assert back.next_seq == 5 and back.torn == 0
    assert [e[0] for e in back.pending] == [1, 3, 4]
    again = Outbox(8, back)
    assert [p for _, p, _ in again.entries()] == [b'{"seq":1}', b'{"seq":3}', b'{"seq":4}']


def test_a_torn_last_line_was_not_committed_and_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "d.journal"
    out = Outbox(8, Journal(str(path)))
    push_all(out, range(3))
    with open(path, "ab") as f:
        f.write(b'm 3 0 t/x {"se')  # the power went mid-write
    back = Journal(str(path))
    assert back.torn == 1 and back.next_seq == 3 and [e[0] for e in back.pending] == [0, 1, 2]
    assert not path.read_bytes().endswith(b'{"se')  # cut before anything is appended
    Outbox(8, back).push("t/x", b'{"seq":3}', False, False, 3)
    assert Journal(str(path)).next_seq == 4


def test_compaction_keeps_the_next_number_and_the_pending_messages_only(tmp_path: Path) -> None:
    path = tmp_path / "d.journal"
    j = Journal(str(path), compact_after=10)
    out = Outbox(64, j)
    push_all(out, range(40))
    tokens: list[int] = []
    out.send_some(lambda t, p, r: tokens.append(len(tokens)) or tokens[-1], 64)
    for token in range(38):
        out.ack(token)
    lines = path.read_bytes().splitlines()
    assert len(lines) < 40  # compacted at least once
    j.compact()
    assert path.read_bytes().splitlines() == [b"n 40", b'm 38 0 t/x {"seq":38}',
                                              b'm 39 0 t/x {"seq":39}']
    assert Journal(str(path)).next_seq == 40


def test_a_dropped_message_is_never_sent_again(tmp_path: Path) -> None:
    path = str(tmp_path / "d.journal")
    out = Outbox(2, Journal(path))
    push_all(out, range(3))  # full: the oldest (0) is dropped
    assert out.dropped == 1
    assert [e[0] for e in Journal(path).pending] == [1, 2]


def test_the_counter_starts_at_the_journal_unless_the_device_ran_without_it() -> None:
    assert start_seq(None, 7, 64) == 7  # a new journal: the old counter's value
    assert start_seq(100, 164, 64) == 100  # the counter reserved ahead: the journal is exact
    assert start_seq(100, 500, 64) == 500  # ran without the journal since: never reuse


def test_a_device_with_a_journal_numbers_every_message_without_a_gap_across_kills(
        tmp_path: Path) -> None:
    """Three boots of the device loop, the first two "killed" (dropped without stop)
    with messages in flight: every number 0..N-1 is published, none twice with
    different content, and the counter's state stays a safe upper bound."""
    state = MemoryState()
    path = str(tmp_path / "bed.journal")
    seen: dict[int, bytes] = {}
    published = 0

    class Clock:
        ms = 0

        def epoch_ms(self) -> int:
            return 1_700_000_000_000 + self.ms

        def ticks_ms(self) -> int:
            return self.ms

    for acked in (3, 0, None):  # per boot: "killed" after 3 publishes, at once, clean stop
        link = MemoryLink()
        clock = Clock()
        dev = Device(DeviceConfig("bed-1", 250), ArraySource([0] * 250 * 6, 250, clock=clock),
                     link, clock, state, journal=Journal(path))
        for _ in range(120):
            clock.ms += 50
            if acked is not None and link.online and len(link.published) >= acked:
                link.online = False  # the connection dies: what is in flight is lost
                link.drop()
            dev.step()
        if acked is None:
            dev.stop()
            for _ in range(50):
                clock.ms += 50
                dev.service()
        for _, payload, _ in link.published:
            seq = json.loads(payload)["seq"]
            assert seen.setdefault(seq, payload) == payload  # a re-send is the same bytes
            published += 1
        assert state.load("seq") >= dev.seq.peek()
    assert sorted(seen) == list(range(max(seen) + 1)) and len(seen) > 20
    assert published > len(seen)  # what was in flight at a "kill" went out again
    assert state.load("seq") == max(seen) + 1  # exact after the clean stop


def test_the_journal_runs_the_same_in_the_micropython_vm(micropython, tmp_path: Path) -> None:
    vm = micropython(SCRIPT.format(path="/j.journal"))
    import contextlib
    import io
    import runpy

    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(path=str(tmp_path / "j.journal")))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(str(script), run_name="__main__")
    assert vm == buf.getvalue()
    assert "recovered" in vm and "torn 0" in vm


def test_bad_journal_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compact_after"):
        Journal(str(tmp_path / "j"), compact_after=0)
    j = Journal(str(tmp_path / "j"))
    with pytest.raises(ValueError, match="newline"):
        j.commit(0, "t/x", b"a\nb", False, False)
