"""UART receiver and transmitter, 8N1, for the host bridge of the FPGA boards.

Both sides run at ``clk / divisor`` baud (``divisor`` clock cycles per bit, an integer of at
least 4) and move bytes over :mod:`amaranth.lib.stream` interfaces of 8-bit payloads.

:class:`UARTTx` takes a byte from ``inp`` whenever it is idle and shifts out a start bit (0),
the eight data bits LSB first and a stop bit (1), each ``divisor`` cycles long; ``tx`` idles
high. The next byte's start bit follows the stop bit directly.

:class:`UARTRx` passes ``rx`` through a two-flop synchronizer (reset value 1, so the idle line
is not a start bit), detects the falling edge of a start bit, checks it again half a bit later
(a shorter glitch is ignored) and samples each data bit and the stop bit in the middle of the
bit: the line as it was ``divisor // 2`` cycles after the start edge (the synchronizer's delay
is taken into account), then every ``divisor`` cycles. The receiver is ready for the next start
bit at the middle of the stop bit. The sample points drift by the baud-rate mismatch over the
9.5 bits up to the stop bit's middle, and the start edge is seen up to a cycle late, so the
tolerated mismatch is about ``(divisor / 2 - 1) / (9.5 * divisor)`` either way (3.9% at
divisor 8, 4.6% at 16; a host UART's divider error is usually below 2%).

A byte whose stop bit reads 0 is dropped and ``frame_error`` pulses for one cycle; the receiver
then waits for the line to go high before it looks for a start bit again (a break, the line
held low, gives one error). ``out`` holds one received byte: if the next byte is complete while
it has not been taken, the new byte is dropped and ``overrun`` pulses.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .bfp_layouts import reject

__all__ = ["UARTRx", "UARTTx", "check_divisor"]

MAX_DIVISOR = 1 << 24


def check_divisor(divisor) -> int:
    """``divisor`` (clock cycles per bit), or ``ValueError``."""
    if isinstance(divisor, bool) or not isinstance(divisor, int) or \
            not 4 <= divisor <= MAX_DIVISOR:
        raise ValueError(f"Divisor (clock cycles per bit) must be an integer from 4 to "
                         f"{MAX_DIVISOR}, not {divisor!r}")
    return divisor


class UARTTx(wiring.Component):
    """8N1 transmitter (module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (4 to 2**24).

    Attributes
    ----------
    inp : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        A byte is being sent.
    """

    def __init__(self, divisor: int):
        try:
            self._divisor = check_divisor(divisor)
        except ValueError as exc:
            reject(self, exc)
        super().__init__({"inp": In(stream.Signature(8)), "tx": Out(1, init=1),
                          "busy": Out(1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        shreg = Signal(10, init=0x3FF)  # stop, 8 data, start; LSB goes out first
        bits = Signal(range(11))
        # ready from the last cycle of a stop bit on: the next start bit follows it directly
        m.d.comb += [self.inp.ready.eq((bits == 0) | ((bits == 1) & (timer == 0))),
                     self.busy.eq(bits != 0), self.tx.eq(shreg[0])]
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [shreg.eq(Cat(0, self.inp.payload, 1)), bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [timer.eq(div - 1), bits.eq(bits - 1),
                             shreg.eq(Cat(shreg[1:], 1))]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTRx(wiring.Component):
    """8N1 receiver (module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (4 to 2**24).

    Attributes
    ----------
    rx : In(1)
        The serial line (asynchronous; synchronized here).
    out : Out(stream.Signature(8))
        Received bytes.
    frame_error : Out(1)
        One-cycle pulse: a byte's stop bit was 0 (the byte is dropped).
    overrun : Out(1)
        One-cycle pulse: a byte was complete while ``out`` still held the previous one (the
        new byte is dropped).
    """

    def __init__(self, divisor: int):
        try:
            self._divisor = check_divisor(divisor)
        except ValueError as exc:
            reject(self, exc)
        super().__init__({"rx": In(1, init=1), "out": Out(stream.Signature(8)),
                          "frame_error": Out(1), "overrun": Out(1)})

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(div))
        shreg = Signal(8)
        count = Signal(range(9))

        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):  # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), count.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], line)),
                                 count.eq(count + 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.out.valid & ~self.out.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.out.valid.eq(1), self.out.payload.eq(shreg)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m
