"""RAW record serializer of the output path: accumulators out as 8-byte little-endian records.

Results the host reads itself (the logits of the last layer, a weight gradient the host wants)
leave the output path without conversion: every accumulator ``(S, ea)`` becomes one 8-byte
record, ``S`` as int32 little-endian (bytes 0..3), ``ea`` as uint16 little-endian (bytes 4..5),
then two zero bytes. On a 64-bit bus a record is one beat, on a 32-bit bus two beats (``S``
first); ``keep`` is all ones except in the empty tensor's single beat.

The input is one *token* per drained block of 16 accumulators with the number of its leading
lanes to send (``lanes``, 0 to 16; a tile of ``n`` columns sends ``n`` records per row, so the
last block of a row may send fewer than 16) and ``last`` (the tensor's final token). A token
with ``lanes = 0`` and ``last = 1`` is the empty tensor: one beat ``keep = 0, last = 1`` (what
the HBM encoder sends for a tensor of 0 blocks); a token with ``lanes = 0`` and ``last = 0``
sends nothing.

Timing: a token is taken when the previous one's final beat leaves (or the serializer is
empty), so the serializer sends one beat per cycle without back-pressure: a block of ``k``
records takes ``k`` cycles on a 64-bit bus, ``2k`` on a 32-bit bus. The first beat is valid the
cycle after the token was taken.
"""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import ACC_BLOCK, BLOCK, bus_beat, check_bus_width, reject

__all__ = ["RECORD_BYTES", "raw_token_layout", "RawSerializer"]

RECORD_BYTES = 8  #: bytes per accumulator record


def raw_token_layout() -> data.StructLayout:
    """One input token: a block of accumulators, the lanes to send and the tensor's end."""
    return data.StructLayout({
        "acc": ACC_BLOCK,
        "lanes": unsigned(5),
        "last": unsigned(1),
    })


class RawSerializer(wiring.Component):
    """Blocks of accumulators to a byte stream of 8-byte records (module docstring).

    Parameters
    ----------
    bus_width : int
        Output bus width in bits: 32 or 64.

    Attributes
    ----------
    i : In(stream.Signature(raw_token_layout()))
        Tokens ``{acc, lanes, last}``.
    o : Out(stream.Signature(bus_beat(bus_width)))
        Records, first record's first byte in bits 0..7.

    Raises
    ------
    ValueError
        If ``bus_width`` is not 32 or 64.
    """

    def __init__(self, bus_width: int = 64):
        try:
            self._bus_width = check_bus_width(bus_width)
        except ValueError as exc:
            reject(self, exc)
        super().__init__({
            "i": In(stream.Signature(raw_token_layout())),
            "o": Out(stream.Signature(bus_beat(bus_width))),
        })

    @property
    def bus_width(self) -> int:
        return self._bus_width

    def elaborate(self, platform):
        m = Module()
        half = self._bus_width == 32  # two beats per record

        acc = Signal(ACC_BLOCK)
        lanes = Signal(5)
        last = Signal()
        full = Signal()  # a token with something to send is held
        idx = Signal(range(BLOCK))
        part = Signal()  # 32-bit bus: the record's second beat

        # the record of lane idx, 64 bits
        s_sel = Signal(32)
        e_sel = Signal(16)
        for k in range(BLOCK):
            with m.If(idx == k):
                m.d.comb += [s_sel.eq(acc.mant[k].as_unsigned()), e_sel.eq(acc.exp[k])]
        empty = lanes == 0
        final_lane = idx == lanes - 1
        final_beat = Signal()
        if half:
            m.d.comb += [
                self.o.payload.data.eq(Mux(part, e_sel, s_sel)),
                final_beat.eq(empty | (final_lane & part)),
            ]
        else:
            m.d.comb += [
                self.o.payload.data.eq(s_sel | (e_sel << 32)),
                final_beat.eq(empty | final_lane),
            ]
        nb = self._bus_width // 8
        m.d.comb += [
            self.o.valid.eq(full),
            self.o.payload.keep.eq(Mux(empty, 0, (1 << nb) - 1)),
            self.o.payload.last.eq(last & final_beat),
        ]

        done = full & self.o.ready & final_beat
        m.d.comb += self.i.ready.eq(~full | done)
        with m.If(full & self.o.ready):
            if half:
                m.d.sync += part.eq(~part)
                with m.If(part):
                    m.d.sync += idx.eq(idx + 1)
            else:
                m.d.sync += idx.eq(idx + 1)
        with m.If(done):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            tok = self.i.payload
            m.d.sync += [
                acc.eq(tok.acc), lanes.eq(tok.lanes), last.eq(tok.last),
                idx.eq(0), part.eq(0),
                full.eq((tok.lanes != 0) | tok.last),
            ]
        return m
