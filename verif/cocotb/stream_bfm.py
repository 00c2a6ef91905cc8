"""cocotb 2.x drivers and monitors for ``amaranth.lib.stream`` ports flattened by Amaranth.

An Amaranth stream port ``i`` comes out of the Verilog back end as ``i__payload``,
``i__valid`` and ``i__ready``; a struct payload is one flat vector in the layout's bit order
(see :mod:`verif.streams` for the packing). Both classes work in the same two phases every
cycle, which makes them independent of how the simulator orders the clock edge against other
callbacks:

1. right after the rising edge, drive this cycle's inputs (``valid``/``payload`` or ``ready``);
2. in the read-only phase, with everything settled, see whether ``valid & ready``: if so, the
   transfer happens at the next edge.

Random bubbles and back-pressure come from a :class:`verif.streams.Pacer`.
"""

from __future__ import annotations

from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "start_clock", "reset"]


def start_clock(dut):
    """Start a 100 MHz clock on ``dut.clk``."""
    Clock(dut.clk, 10, unit="ns").start()


async def reset(dut, cycles: int = 2):
    """Hold ``dut.rst`` for ``cycles`` rising edges."""
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


class StreamSource:
    """Drives integer payloads into the DUT's ``<prefix>`` input stream.

    Parameters
    ----------
    dut : cocotb handle
        The top level.
    prefix : str
        Port name (``"i"`` for ``i__valid`` etc.).
    pacer : verif.streams.Pacer, optional
        Random bubbles between words.
    """

    def __init__(self, dut, prefix: str, pacer=None):
        self._clk = dut.clk
        self._valid = getattr(dut, f"{prefix}__valid")
        self._ready = getattr(dut, f"{prefix}__ready")
        self._payload = getattr(dut, f"{prefix}__payload")
        self._pacer = pacer
        self._queue = deque()
        self.cycle = 0  #: cycles since the source was started
        self.sent = []  #: cycle in which each word was taken (counted from start)
        self._valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, words):
        """Queue ``words`` (ints) for sending."""
        self._queue.extend(int(w) for w in words)

    @property
    def idle(self) -> bool:
        """Nothing left to send."""
        return not self._queue

    def stop(self):
        """Stop driving (``valid`` low from then on)."""
        self._task.cancel()
        self._valid.value = 0

    async def _run(self):
        taken = False
        while True:
            await RisingEdge(self._clk)
            self.cycle += 1
            if taken:
                self._queue.popleft()
            if self._queue and not (self._pacer is not None and self._pacer.stall()):
                self._valid.value = 1
                self._payload.value = self._queue[0]
                offered = True
            else:
                self._valid.value = 0
                offered = False
            await ReadOnly()
            taken = offered and bool(self._ready.value)
            if taken:
                self.sent.append(self.cycle)


class StreamSink:
    """Takes integer payloads from the DUT's ``<prefix>`` output stream.

    Parameters
    ----------
    dut : cocotb handle
        The top level.
    prefix : str
        Port name (``"o"`` for ``o__valid`` etc.).
    pacer : verif.streams.Pacer, optional
        Random back-pressure.
    check_stable : bool
        Assert the stream rule that ``valid`` stays high with an unchanged payload until the
        word is taken.
    """

    def __init__(self, dut, prefix: str, pacer=None, check_stable: bool = True):
        self._clk = dut.clk
        self._valid = getattr(dut, f"{prefix}__valid")
        self._ready = getattr(dut, f"{prefix}__ready")
        self._payload = getattr(dut, f"{prefix}__payload")
        self._pacer = pacer
        self._check_stable = check_stable
        self.words = []  #: payloads taken, as ints
        self.cycles = []  #: cycle in which each was taken (counted from start)
        self.cycle = 0
        self._ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        self._task.cancel()
        self._ready.value = 0

    async def wait_for(self, count: int, timeout: int = 100_000):
        """Wait until ``count`` words were taken; fail after ``timeout`` idle cycles."""
        idle, seen = 0, len(self.words)
        while len(self.words) < count:
            await RisingEdge(self._clk)
            if len(self.words) == seen:
                idle += 1
                assert idle < timeout, \
                    f"no output for {timeout} cycles ({len(self.words)}/{count} taken)"
            else:
                idle, seen = 0, len(self.words)

    async def _run(self):
        pending = None  # payload offered but not taken in the previous cycle
        while True:
            await RisingEdge(self._clk)
            self.cycle += 1
            ready = not (self._pacer is not None and self._pacer.stall())
            self._ready.value = int(ready)
            await ReadOnly()
            if not self._valid.value:
                assert pending is None or not self._check_stable, \
                    "valid dropped before the word was taken"
                continue
            word = self._payload.value.to_unsigned()
            if self._check_stable and pending is not None:
                assert word == pending, "payload changed while valid and not ready"
            if ready:
                self.words.append(word)
                self.cycles.append(self.cycle)
                pending = None
            else:
                pending = word
