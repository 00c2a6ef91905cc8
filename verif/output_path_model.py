"""Stimulus, packing and golden expectations shared by the output-path tests (Amaranth sim and
cocotb): :mod:`hdl.output_path`.

* :func:`random_tile` draws an engine tile (an ``m x n`` :class:`~golden.gemm.Accumulator`) from
  :func:`golden.gemm.matmul` of random BFP8 operands (optionally with a BP output mask), or
  hand-made tiles: all zero, extreme exponents (``ea`` near 0 and near 1023, saturating and
  flushing blocks), random accumulator blocks;
* :func:`task_beats` cuts a tile into the engine's task beats ``(row, grp, mant[R], exp[R])``,
  every task of ``row < m, grp < ceil(n/R)``, columns ``>= n`` in the reset state, in random
  order (the engine finishes tasks out of order);
* :func:`expected` is the contract for one drain: the HBM v1 bytes of the (ReLU'd) tile's
  BFP8 conversion, of its filtered copy, the statistics, or the RAW records;
* :class:`Packer` packs the payloads with the component's own layouts (field offsets);
* :class:`Bench` drives the component in the Amaranth simulator (:func:`run_scenario` checks a
  whole scenario against the golden model).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from amaranth.hdl import Value
from amaranth.sim import Simulator

import golden.hbm
from golden.gemm import Accumulator, matmul
from golden.sparsity import Threshold, filter, stats
from hdl.bfp_layouts import BLOCK
from hdl.config import EngineConfig
from hdl.engine_lane import out_layout
from hdl.output_path import (
    Op,
    OutputPath,
    Status,
    carry_addr_layout,
    carry_data_layout,
    cmd_layout,
)
from verif.engine_model import random_operand
from verif.streams import Pacer, acc_edge_cases, acc_random, beats_to_bytes, unpack_beat

__all__ = ["Drain", "Packer", "random_tile", "task_beats", "padded", "expected", "raw_bytes",
           "StatsModel", "random_drain", "scenario", "Bench", "check_drain", "run_scenario"]


@dataclasses.dataclass
class Drain:
    """One DRAIN (or CLEAR_STATS, ``op = "CLEAR_STATS"``) command in Python form."""

    m: int = 1
    n: int = 1
    relu: bool = False
    raw: bool = False
    fwd: bool = True
    filt: bool = False
    clear_stats: bool = False
    te: int = 0
    tm: int = 0
    base: int = 109
    op: str = "DRAIN"

    def dict(self):
        d = dataclasses.asdict(self)
        d["op"] = Op[self.op].value if isinstance(self.op, str) else int(self.op)
        return d


def _fields(layout):
    return {name: (field.offset, field.width) for name, field in layout}


class Packer:
    """Packs and unpacks the output path's payloads for one configuration."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.cmd_f = _fields(cmd_layout(cfg))
        self.beat_f = _fields(out_layout(cfg))
        self.ca_f = _fields(carry_addr_layout(cfg))
        self.cd_f = _fields(carry_data_layout(cfg))

    @staticmethod
    def _pack(fields, values: dict) -> int:
        word = 0
        for name, v in values.items():
            off, width = fields[name]
            v = int(v)
            if not 0 <= v < (1 << width):
                raise ValueError(f"Field {name} = {v} does not fit {width} bits")
            word |= v << off
        return word

    def command(self, d: Drain) -> int:
        return self._pack(self.cmd_f, d.dict())

    def beat(self, row, grp, mants, exps) -> int:
        mw = sum((int(v) & 0xFFFFFFFF) << (32 * k) for k, v in enumerate(mants))
        ew = sum((int(v) & 0x3FF) << (10 * k) for k, v in enumerate(exps))
        return self._pack(self.beat_f, {"row": row, "grp": grp, "mant": mw, "exp": ew})

    def carry_addr(self, row, grp) -> int:
        return self._pack(self.ca_f, {"row": row, "grp": grp})

    def carry_data(self, word: int):
        """``(mants, exps)`` lists of R from a ``carry_data`` value."""
        r = self.cfg.rows
        off_m, _ = self.cd_f["mant"]
        off_e, _ = self.cd_f["exp"]
        mants, exps = [], []
        for k in range(r):
            v = (word >> (off_m + 32 * k)) & 0xFFFFFFFF
            mants.append(v - (1 << 32) if v >> 31 else v)
            exps.append((word >> (off_e + 10 * k)) & 0x3FF)
        return mants, exps


def random_tile(rng: np.random.Generator, m: int, n: int, kind: str = "gemm") -> Accumulator:
    """An ``m x n`` tile as the engine computes it (module docstring).

    ``kind``: ``"gemm"`` (matmul of random operands, sparsity and exponent range drawn at
    random), ``"masked"`` (with a random BP output mask), ``"zero"``, ``"extreme"`` (random
    accumulator blocks and the hand-made edge blocks of the converter tests, exponents over
    the whole 10-bit field), ``"ea_low"`` / ``"ea_high"`` (``ea`` within 8 of 0 or of 1023).
    """
    if kind in ("gemm", "masked"):
        k = 16 * int(rng.integers(1, 5))
        extreme = rng.choice(np.array([None, None, "sat", "exp", "wide"], dtype=object))
        a = random_operand(rng, m, k, float(rng.choice([0.0, 0.5, 0.9])), extreme=extreme)
        b = random_operand(rng, n, k, float(rng.choice([0.0, 0.3, 0.9])), extreme=extreme)
        mask = rng.random((m, n)) < 0.6 if kind == "masked" else None
        return matmul(a, b, out_mask=mask)
    if kind == "zero":
        z = np.zeros((m, n), np.int64)
        return Accumulator(z, z.copy())
    if kind == "extreme":
        cells = m * n
        em, ee = acc_edge_cases(rng)
        rm, re = acc_random(rng, -(-cells // BLOCK) + 1, sparsity=0.2)
        mant = np.concatenate([em.reshape(-1), rm.reshape(-1)])
        exp = np.concatenate([ee.reshape(-1), re.reshape(-1)])
        # in order from a random start, so that rows of 16 keep the edge blocks whole
        pick = (int(rng.integers(0, len(mant))) + np.arange(cells)) % len(mant)
        return Accumulator(mant[pick].reshape(m, n), exp[pick].reshape(m, n))
    if kind in ("ea_low", "ea_high"):
        mant = rng.integers(-(1 << 31), 1 << 31, size=(m, n))
        mant = np.where(rng.random((m, n)) < 0.2, 0, mant)
        off = rng.integers(0, 9, size=(m, n))
        exp = off if kind == "ea_low" else 1023 - off
        return Accumulator(mant.astype(np.int64), np.where(mant == 0, 0, exp).astype(np.int64))
    raise ValueError(f"Unknown tile kind {kind!r}")


def task_beats(cfg: EngineConfig, acc: Accumulator, rng=None) -> list[tuple]:
    """Every task of the tile as ``(row, grp, mants, exps)``, shuffled when ``rng`` is given."""
    m, n = acc.shape
    r = cfg.rows
    beats = []
    for row in range(m):
        for g in range(-(-n // r)):
            cols = [g * r + k for k in range(r)]
            beats.append((row, g, [int(acc.mant[row, j]) if j < n else 0 for j in cols],
                          [int(acc.exp[row, j]) if j < n else 0 for j in cols]))
    if rng is not None:
        beats = [beats[k] for k in rng.permutation(len(beats))]
    return beats


def padded(acc: Accumulator, relu: bool) -> Accumulator:
    if relu:
        acc = acc.relu()
    m, n = acc.shape
    width = -(-n // BLOCK) * BLOCK
    mant = np.zeros((m, width), np.int64)
    exp = np.zeros((m, width), np.int64)
    mant[:, :n] = acc.mant
    exp[:, :n] = acc.exp
    return Accumulator(mant, exp)


def raw_bytes(acc: Accumulator, relu: bool) -> bytes:
    """The RAW records of a tile: per output, S int32 LE, ea uint16 LE, two zero bytes."""
    if relu:
        acc = acc.relu()
    out = bytearray()
    for s, e in zip(acc.mant.reshape(-1), acc.exp.reshape(-1), strict=True):
        out += int(s).to_bytes(4, "little", signed=True) + int(e).to_bytes(2, "little")
        out += b"\0\0"
    return bytes(out)


def expected(acc: Accumulator, d: Drain) -> dict:
    """What one accepted drain of ``acc`` (the drained ``m x n`` tile) must produce.

    Returns ``{"fwd": bytes or None, "filt": bytes or None, "stats": FilterStats or None}``
    (None: no tensor on that output / statistics untouched).
    """
    if d.raw:
        return {"fwd": raw_bytes(acc, d.relu), "filt": None, "stats": None}
    bfp = padded(acc, d.relu).to_bfp()
    thr = Threshold(d.te, d.tm)
    exps = bfp.exponents.reshape(-1)
    mants = bfp.mantissas.reshape(-1, BLOCK)
    out = {"fwd": golden.hbm.encode(exps, mants) if d.fwd else None, "filt": None,
           "stats": stats(bfp, thr, d.base)}
    if d.filt:
        f = filter(bfp, thr)
        out["filt"] = golden.hbm.encode(f.exponents.reshape(-1), f.mantissas.reshape(-1, BLOCK))
    return out


class StatsModel:
    """The statistics counters over a sequence of commands (clears and HBM-mode drains)."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.values = self.zeros = self.filtered_zeros = 0
        self.hist = [0] * 32

    def add(self, st):
        cap = (1 << 32) - 1
        self.values = min(cap, self.values + st.values)
        self.zeros = min(cap, self.zeros + st.zeros)
        self.filtered_zeros = min(cap, self.filtered_zeros + st.filtered_zeros)
        self.hist = [min(cap, a + b) for a, b in zip(self.hist, st.hist, strict=True)]

    def as_dict(self):
        return {"values": self.values, "zeros": self.zeros,
                "filtered_zeros": self.filtered_zeros, "hist": list(self.hist)}


def random_drain(rng, acc: Accumulator, m: int, n: int) -> Drain:
    """A random drain command for a tile: modes, copies, ReLU and a threshold near its values."""
    mode = rng.random()
    raw = mode < 0.15
    fwd, filt = [(True, True), (False, True), (True, False)][int(rng.integers(0, 3))]
    bfp = padded(Accumulator(acc.mant[:m, :n], acc.exp[:m, :n]), False).to_bfp()
    live = bfp.exponents[bfp.exponents != 0]
    centre = int(rng.choice(live)) if live.size else 127
    return Drain(m=m, n=n, relu=bool(rng.random() < 0.5), raw=raw, fwd=fwd, filt=filt,
                 clear_stats=bool(rng.random() < 0.6),
                 te=int(np.clip(centre + rng.integers(-4, 3), 0, 255)),
                 tm=0 if rng.random() < 0.2 else int(rng.integers(1, 256)),
                 base=int(np.clip(centre - 16 + rng.integers(-3, 4), 0, 255)))


def scenario(rng, cfg: EngineConfig, tiles: int, kinds=None):
    """A list of steps ``("tile", acc, beats)``, ``("drain", Drain, acc)`` and ``("clear",)``.

    Each tile of random shape (including m = 1, ragged n, full size) is written in random
    order and drained one to three times with random commands (the later ones may drain a
    smaller rectangle); tiles of every ``kind`` appear.
    """
    kinds = kinds or ["gemm", "gemm", "masked", "zero", "extreme", "ea_low", "ea_high"]
    steps = []
    for t in range(tiles):
        kind = kinds[t % len(kinds)]
        shape_pick = rng.random()
        if shape_pick < 0.15:
            m, n = 1, int(rng.integers(1, cfg.max_n + 1))
        elif shape_pick < 0.3:
            m, n = cfg.max_m, cfg.max_n
        else:
            m, n = int(rng.integers(1, cfg.max_m + 1)), int(rng.integers(1, cfg.max_n + 1))
        acc = random_tile(rng, m, n, kind)
        steps.append(("tile", acc, task_beats(cfg, acc, rng)))
        for _ in range(int(rng.integers(1, 4))):
            dm, dn = m, n
            if rng.random() < 0.3:
                dm, dn = int(rng.integers(1, m + 1)), int(rng.integers(1, n + 1))
            sub = Accumulator(acc.mant[:dm, :dn], acc.exp[:dm, :dn])
            steps.append(("drain", random_drain(rng, acc, dm, dn), sub))
        if rng.random() < 0.1:
            steps.append(("clear",))
    return steps


# -- Amaranth-simulator driver ------------------------------------------------------------------

class Bench:
    """Drives one OutputPath in the Amaranth simulator, cycle by cycle, in one testbench.

    Beats go in with random bubbles, both outputs see random back-pressure; every output is
    checked for the stream rule (a beat offered and not taken stays the same until taken).
    """

    def __init__(self, cfg, bus_width, rng, in_prob=0.0, out_prob=0.0, drain_lanes=16):
        self.cfg = cfg
        self.bw = bus_width
        self.dut = OutputPath(cfg, bus_width, drain_lanes=drain_lanes)
        self.pk = Packer(cfg)
        self.rng = rng
        self.in_pacer = Pacer(rng, in_prob)
        probs = out_prob if isinstance(out_prob, tuple) else (out_prob, out_prob)
        self.out_pacers = tuple(Pacer(rng, p, burst=True) for p in probs)
        self.cycle = 0
        self._pending = [None, None]

    async def tick(self, ctx, ready=(0, 0)):
        """One cycle; returns the beats taken on (o_fwd, o_filt) and the sampled done."""
        dut = self.dut
        ctx.set(dut.o_fwd.ready, ready[0])
        ctx.set(dut.o_filt.ready, ready[1])
        _, _, vf, pf, vs, ps, done = await ctx.tick().sample(
            dut.o_fwd.valid, Value.cast(dut.o_fwd.payload),
            dut.o_filt.valid, Value.cast(dut.o_filt.payload), dut.done)
        self.cycle += 1
        taken = []
        for k, (v, p) in enumerate(((vf, pf), (vs, ps))):
            if self._pending[k] is not None:
                assert v and p == self._pending[k], "output changed before it was taken"
            self._pending[k] = p if v and not ready[k] else None
            taken.append(p if v and ready[k] else None)
        return taken, done

    async def write_beats(self, ctx, beats):
        dut = self.dut
        for beat in beats:
            while self.in_pacer.stall():
                ctx.set(dut.i.valid, 0)
                await self.tick(ctx)
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), self.pk.beat(*beat))
            assert ctx.get(dut.i.ready), "input not ready"
            await self.tick(ctx)
        ctx.set(dut.i.valid, 0)

    async def command(self, ctx, d: Drain, timeout=20_000, beat=None):
        """Issue ``d``; collect both outputs until done. Returns a result dict.

        ``beat``: an input beat written in the command's first cycle (the path is idle then,
        so that is the cycle the command is accepted in).
        """
        dut = self.dut
        ctx.set(dut.cmd.valid, 1)
        ctx.set(Value.cast(dut.cmd.payload), self.pk.command(d))
        if beat is not None:
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), self.pk.beat(*beat))
        start = self.cycle
        packets = [[], []]
        first = [None, None]
        accepted = None
        while True:
            if accepted is None and ctx.get(dut.cmd.ready):
                accepted = self.cycle
            ready = tuple(int(not p.stall()) for p in self.out_pacers)
            taken, done = await self.tick(ctx, ready)
            if accepted is not None:
                ctx.set(dut.cmd.valid, 0)
                ctx.set(dut.i.valid, 0)
            for k in range(2):
                if taken[k] is not None:
                    if first[k] is None:
                        first[k] = self.cycle - 1 - accepted
                    packets[k].append(unpack_beat(self.bw, taken[k]))
            if done:
                break
            assert self.cycle - start < timeout, f"command {d} did not finish"
        out = {"status": Status(ctx.get(dut.status)), "cycles": ctx.get(dut.cycles),
               "wait": accepted - start, "first": first, "done_at": self.cycle - 1 - accepted}
        assert out["cycles"] == out["done_at"], (out["cycles"], out["done_at"])
        for k, name in enumerate(("fwd", "filt")):
            out[name] = None
            if packets[k]:
                assert packets[k][-1][2] == 1 and all(b[2] == 0 for b in packets[k][:-1]), \
                    f"{name}: last must be set on the final beat only"
                out[name] = beats_to_bytes(packets[k], self.bw)
                out[name + "_beats"] = len(packets[k])
        out["stats"] = {"values": ctx.get(dut.values), "zeros": ctx.get(dut.zeros),
                        "filtered_zeros": ctx.get(dut.filtered_zeros),
                        "hist": [ctx.get(dut.hist[k]) for k in range(32)]}
        # nothing more may come after done
        for _ in range(3):
            taken, done = await self.tick(ctx, (1, 1))
            assert taken == [None, None] and not done, "output after done"
        assert not ctx.get(dut.busy)
        return out

    def run(self, body):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def tb(ctx):
            await body(ctx)

        sim.add_testbench(tb)
        sim.run()


def check_drain(n, d, acc, got, model: StatsModel):
    """Compare one drain's outputs with the golden model; update the statistics model."""
    assert got["status"] == Status.OK, f"step {n}: status {got['status']}"
    want = expected(acc, d)
    if d.clear_stats:
        model.clear()
    if want["stats"] is not None:
        model.add(want["stats"])
    for name in ("fwd", "filt"):
        size = [None if v is None else len(v) for v in (got[name], want[name])]
        assert got[name] == want[name], \
            f"step {n} {d}: {name} bytes differ (got {size[0]}, want {size[1]} bytes)"
    assert got["stats"] == model.as_dict(), f"step {n} {d}: statistics"


def run_scenario(cfg, bus_width, rng, steps, in_prob=0.0, out_prob=0.0, drain_lanes=16):
    bench = Bench(cfg, bus_width, rng, in_prob, out_prob, drain_lanes)
    model = StatsModel()
    results = []

    async def body(ctx):
        for n, step in enumerate(steps):
            if step[0] == "tile":
                await bench.write_beats(ctx, step[2])
            elif step[0] == "clear":
                got = await bench.command(ctx, Drain(op="CLEAR_STATS"))
                model.clear()
                assert got["status"] == Status.OK and got["stats"] == model.as_dict()
            else:
                got = await bench.command(ctx, step[1])
                check_drain(n, step[1], step[2], got, model)
                results.append(got)

    bench.run(body)
    return results
