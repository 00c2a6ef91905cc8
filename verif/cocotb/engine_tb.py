"""cocotb testbench of hdl.engine.Engine against golden.gemm.matmul (scoreboard style).

The configuration comes as JSON in ``CFG`` (the fields of :class:`hdl.config.EngineConfig`);
``CASES`` sets the number of random tiles, ``SEED`` the seed. One simulation runs every case:
the buffers are cleared, loaded from golden BFP tensors through the block streams, the tile is
run, and the output beats are compared with the golden model; the engine's ``mac_cycles``
counter is compared with the number of nonzeros it must visit (zeros of A everywhere, and of
B where all R values a nonzero meets are zero), so skipping is checked exactly.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from golden.bfp import BFPTensor
from golden.gemm import reblock
from hdl.config import BLOCK, EngineConfig
from hdl.engine_load import Status
from verif.engine_model import Packer, block_beats, expected_beats, om_words, random_operand

SPARSITIES = [0.0, 0.3, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]


def expected_mac_cycles(cfg, a: BFPTensor, b: BFPTensor, out_mask=None) -> int:
    """Nonzeros the lanes must visit: per enabled task, popcount(maskA & OR of R B masks)."""
    m, n = a.shape[0], b.shape[0]
    nza = a.blocks() != 0
    nzb = b.blocks() != 0
    total = 0
    for g in range(-(-n // cfg.rows)):
        cols = slice(g * cfg.rows, min(n, (g + 1) * cfg.rows))
        cm = nzb[cols].any(axis=0)  # kb x 16
        for i in range(m):
            if out_mask is not None and not out_mask[i, cols].any():
                continue
            total += int((nza[i] & cm).sum())
    return total


class TB:
    """Drivers for the engine's streams and a checker for one tile."""

    def __init__(self, dut, cfg: EngineConfig, rng: np.random.Generator):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.pk = Packer(cfg)
        self.ready_prob = 1.0  # output back-pressure

    async def reset(self):
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        for port in ("cmd", "a_in", "b_in", "om_in"):
            getattr(d, f"{port}__valid").value = 0
            getattr(d, f"{port}__payload").value = 0
        d.o__ready.value = 1
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0
        await RisingEdge(d.clk)

    async def send(self, port: str, words):
        """Drive ``words`` on stream ``port`` (valid held until ready)."""
        d = self.dut
        valid = getattr(d, f"{port}__valid")
        payload = getattr(d, f"{port}__payload")
        ready = getattr(d, f"{port}__ready")
        for word in words:
            valid.value = 1
            payload.value = word
            while True:
                await ReadOnly()
                ok = int(ready.value)
                await RisingEdge(d.clk)
                if ok:
                    break
        valid.value = 0

    async def load(self, a: BFPTensor, b: BFPTensor, out_mask=None, *, clear=True):
        pk = self.pk
        if clear:
            await self.send("cmd", [pk.command("CLEAR_A"), pk.command("CLEAR_B")])
        if a is not None:
            await self.send("a_in", [pk.a_beat(x) for x in block_beats(a)])
        if b is not None:
            await self.send("b_in", [pk.b_beat(x) for x in block_beats(b)])
        if out_mask is not None:
            await self.send("om_in", [pk.om_word(x) for x in om_words(self.cfg, out_mask)])

    async def run(self, m: int, n: int, use_mask: bool, limit: int = 2_000_000):
        """RUN and collect the output beats until ``done``."""
        d = self.dut
        await self.send("cmd", [self.pk.command("RUN", m, n, use_mask)])
        beats = []
        for _ in range(limit):
            rdy = 1 if self.ready_prob >= 1 else int(self.rng.random() < self.ready_prob)
            d.o__ready.value = rdy
            await ReadOnly()
            if rdy and int(d.o__valid.value):
                beats.append(self.pk.unpack_out(d.o__payload.value.to_unsigned()))
            done = int(d.done.value)
            await RisingEdge(d.clk)
            if done:
                break
        else:
            raise AssertionError(f"RUN {m}x{n} did not finish in {limit} cycles")
        d.o__ready.value = 1
        return beats

    async def status(self) -> Status:
        """The status once the last edge's updates have settled (costs one cycle)."""
        await ReadOnly()
        value = Status(self.dut.status.value.to_unsigned())
        await RisingEdge(self.dut.clk)
        return value

    async def check_tile(self, a, b, out_mask=None, label=""):
        await self.load(a, b, out_mask)
        beats = await self.run(a.shape[0], b.shape[0], out_mask is not None)
        status = await self.status()
        cfg = self.cfg
        if (np.count_nonzero(a.mantissas) > cfg.a_nz_depth
                or np.count_nonzero(a.exponents) > cfg.a_hdr_depth):
            assert status == Status.A_FULL and beats == [], f"{label}: {status}, {len(beats)}"
            return None
        assert status == Status.OK, f"{label}: status {status}"
        want = expected_beats(self.cfg, a, b, out_mask)
        got = {}
        for row, grp, mants, exps in beats:
            assert (row, grp) not in got, f"{label}: task {(row, grp)} twice"
            got[(row, grp)] = (mants, exps)
        assert set(got) == set(want), f"{label}: tasks {sorted(set(want) ^ set(got))[:5]}"
        for key, val in want.items():
            assert got[key] == val, f"{label}: task {key}: got {got[key]} want {val}"
        macs = self.dut.mac_cycles.value.to_unsigned()
        assert macs == expected_mac_cycles(self.cfg, a, b, out_mask), (label, macs)
        return self.dut.cycles.value.to_unsigned()


def _cfg() -> EngineConfig:
    return EngineConfig(**json.loads(os.environ["CFG"]))


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(os.environ.get("SEED", "1")))


def random_case(cfg: EngineConfig, rng: np.random.Generator):
    """A random tile in one phase: (label, A, B, out_mask)."""
    phase = rng.choice(["fp", "bp", "wg"])
    extreme = rng.choice([None, None, None, "sat", "exp", "wide"])
    sa = float(rng.choice(SPARSITIES))
    if phase == "wg":
        # dY (S x Co) and X (S x K) reblocked along the S samples: A = Co x S, B = K x S
        s_len = BLOCK * int(rng.integers(1, cfg.k_blocks + 1))
        co = int(rng.integers(1, cfg.max_m + 1))
        k = int(rng.integers(1, cfg.max_n + 1))
        sb = float(rng.choice(SPARSITIES))
        dy = random_operand(rng, s_len, BLOCK * -(-co // BLOCK), sa, extreme=extreme)
        x = random_operand(rng, s_len, BLOCK * -(-k // BLOCK), sb, extreme=extreme)
        a, b = reblock(dy), reblock(x)
        if rng.random() < 0.5:  # re-blocking flushes small values: also draw A, B directly
            a = random_operand(rng, a.shape[0], s_len, sa, extreme=extreme)
            b = random_operand(rng, b.shape[0], s_len, sb, extreme=extreme)
        a = BFPTensor(a.exponents[:co], a.mantissas[:co])
        b = BFPTensor(b.exponents[:k], b.mantissas[:k])
        return f"wg sA={sa} sB={sb} {extreme}", a, b, None
    m = int(rng.integers(1, cfg.max_m + 1))
    n = int(rng.integers(1, cfg.max_n + 1))
    k = BLOCK * int(rng.integers(1, cfg.k_blocks + 1))
    a = random_operand(rng, m, k, sa, extreme=extreme)
    b = random_operand(rng, n, k, float(rng.choice([0.0, 0.0, 0.1, 0.5])), extreme=extreme)
    mask = None
    if phase == "bp":
        kind = rng.choice(["ones", "zeros", "random", "random"])
        mask = {"ones": np.ones((m, n), bool), "zeros": np.zeros((m, n), bool),
                "random": rng.random((m, n)) < rng.random()}[kind]
    return f"{phase} {m}x{n}x{k} sA={sa} {extreme} mask={mask is not None}", a, b, mask


@cocotb.test()
async def random_tiles(dut):
    """``CASES`` random tiles over the three phases, shapes, sparsities and extremes."""
    cfg, rng = _cfg(), _rng()
    tb = TB(dut, cfg, rng)
    await tb.reset()
    for case in range(int(os.environ.get("CASES", "10"))):
        label, a, b, mask = random_case(cfg, rng)
        tb.ready_prob = 1.0 if case % 3 else 0.6
        dut._log.info("case %d: %s", case, label)
        await tb.check_tile(a, b, mask, label=f"case {case} {label}")


@cocotb.test()
async def edge_tiles(dut):
    """All-zero and dense operands, saturation, exponent extremes, masks all 0 / all 1."""
    cfg, rng = _cfg(), _rng()
    tb = TB(dut, cfg, rng)
    await tb.reset()
    n, k = cfg.max_n, cfg.max_k
    m = min(cfg.max_m, cfg.a_nz_depth // k, cfg.a_hdr_depth // cfg.k_blocks)  # dense A fits
    dense = random_operand(rng, m, k, 0.0)
    dense = BFPTensor(dense.exponents,
                      np.where(dense.mantissas == 0, 3, dense.mantissas).astype(np.int8))
    w = random_operand(rng, n, k, 0.0)
    zero_a = random_operand(rng, m, k, 1.0)
    zero_b = random_operand(rng, n, k, 1.0)
    sat_a = random_operand(rng, m, k, 0.0, extreme="sat")
    sat_b = random_operand(rng, n, k, 0.0, extreme="sat")
    lo_a = BFPTensor(np.ones_like(dense.exponents), dense.mantissas)
    hi_b = BFPTensor(np.full_like(w.exponents, 254), w.mantissas)
    ragged_a = random_operand(rng, max(1, m - 1), k - BLOCK if k > BLOCK else k, 0.5)
    ragged_b = random_operand(rng, max(1, n - 3), ragged_a.shape[1], 0.2)
    cases = [
        ("dense x dense (largest tile)", dense, w, None),
        ("zero A", zero_a, w, None),
        ("zero B", dense, zero_b, None),
        ("zero x zero", zero_a, zero_b, None),
        ("saturation", sat_a, sat_b, None),
        ("exponents 1 x 254", lo_a, hi_b, None),
        ("exponent extremes", random_operand(rng, m, k, 0.5, extreme="exp"),
         random_operand(rng, n, k, 0.0, extreme="exp"), None),
        ("mask all zero", dense, w, np.zeros((m, n), bool)),
        ("mask all one", random_operand(rng, m, k, 0.9), w, np.ones((m, n), bool)),
        ("ragged", ragged_a, ragged_b, None),
        ("one output", random_operand(rng, 1, BLOCK, 0.5), random_operand(rng, 1, BLOCK, 0.0),
         None),
    ]
    for label, a, b, mask in cases:
        dut._log.info("edge: %s", label)
        await tb.check_tile(a, b, mask, label=label)


@cocotb.test()
async def reuse_and_errors(dut):
    """B reloaded under a kept A; every error status, readable, cleared, never a hang."""
    cfg, rng = _cfg(), _rng()
    tb = TB(dut, cfg, rng)
    pk = tb.pk
    await tb.reset()
    m, n, k = min(3, cfg.max_m), min(5, cfg.max_n), min(48, cfg.max_k)
    a = random_operand(rng, m, k, 0.5)
    await tb.check_tile(a, random_operand(rng, n, k, 0.0), label="first")
    b2 = random_operand(rng, n, k, 0.3)
    await tb.send("cmd", [pk.command("CLEAR_B")])
    await tb.load(None, b2, clear=False)
    beats = await tb.run(m, n, False)
    assert await tb.status() == Status.OK
    want = expected_beats(cfg, a, b2)
    assert {(r, g): (mm, ee) for r, g, mm, ee in beats} == want

    async def expect(status, label):
        got = await tb.status()
        assert got == status, f"{label}: {got} != {status}"
        beats = await tb.run(1, 1, False)  # a RUN with an error pending ends at once
        assert beats == [], label
        assert await tb.status() == status, label
        await tb.send("cmd", [pk.command("CLEAR_A"), pk.command("CLEAR_B")])
        assert await tb.status() == Status.OK, label

    hdr = {"hdr": 1, "row": 0, "kb": 0, "mask": 1, "exp": 130}
    await tb.send("a_in", [pk.a_beat(dict(hdr, row=1)), pk.a_beat({"hdr": 0, "mant": 5}),
                           pk.a_beat(hdr)])
    await expect(Status.A_ORDER, "row order")
    await tb.send("a_in", [pk.a_beat(dict(hdr, kb=1)), pk.a_beat({"hdr": 0, "mant": 5}),
                           pk.a_beat(dict(hdr, kb=1))])
    await expect(Status.A_ORDER, "kb order")
    await tb.send("a_in", [pk.a_beat(dict(hdr, mask=0))])
    await expect(Status.A_BLOCK, "empty mask")
    await tb.send("a_in", [pk.a_beat(dict(hdr, exp=0))])
    await expect(Status.A_BLOCK, "zero exponent")
    await tb.send("a_in", [pk.a_beat(hdr), pk.a_beat({"hdr": 0, "mant": 0})])
    await expect(Status.A_BLOCK, "zero mantissa")
    await tb.send("a_in", [pk.a_beat(hdr), pk.a_beat({"hdr": 0, "mant": -128})])
    await expect(Status.A_BLOCK, "mantissa -128")
    await tb.send("a_in", [pk.a_beat(dict(hdr, mask=3)), pk.a_beat({"hdr": 0, "mant": 1}),
                           pk.a_beat(dict(hdr, kb=1))])
    await expect(Status.A_BLOCK, "missing mantissa")
    await tb.send("a_in", [pk.a_beat({"hdr": 0, "mant": 1})])
    await expect(Status.A_BLOCK, "stray mantissa")
    await tb.send("a_in", [pk.a_beat(dict(hdr, mask=3)), pk.a_beat({"hdr": 0, "mant": 1})])
    assert await tb.run(1, 1, False) == []
    await expect(Status.A_BLOCK, "RUN with mantissas missing")
    # dense rows until the A buffer is full (or the rows run out)
    beats = []
    for blk in range(cfg.max_m * cfg.k_blocks + 1):
        row, kb = divmod(blk, cfg.k_blocks)
        beats += [pk.a_beat(dict(hdr, row=row % (1 << max(1, (cfg.max_m - 1).bit_length())),
                                 kb=kb, mask=0xFFFF))]
        beats += [pk.a_beat({"hdr": 0, "mant": 1})] * BLOCK
    await tb.send("a_in", beats)
    small = (cfg.a_nz_depth < cfg.max_m * cfg.max_k
             or cfg.a_hdr_depth < cfg.max_m * cfg.k_blocks)
    if small:
        await expect(Status.A_FULL, "A full")
    elif cfg.max_m & (cfg.max_m - 1):
        await expect(Status.A_RANGE, "A row >= max_m")
    else:  # the row index wrapped to 0: out of order
        await expect(Status.A_ORDER, "A row wrapped")
    await tb.send("b_in", [pk.b_beat({"hdr": 1, "row": 0, "kb": 0, "mask": 0, "exp": 1})])
    await expect(Status.B_BLOCK, "B empty mask")
    await tb.send("b_in", [pk.b_beat({"hdr": 0, "mant": 3})])
    await expect(Status.B_BLOCK, "B stray mantissa")
    await tb.send("b_in", [pk.b_beat({"hdr": 1, "row": 0, "kb": 0, "mask": 1, "exp": 1}),
                           pk.b_beat({"hdr": 0, "mant": 0})])
    await expect(Status.B_BLOCK, "B zero mantissa")
    await tb.send("b_in", [pk.b_beat({"hdr": 1, "row": 0, "kb": 0, "mask": 1, "exp": 1})])
    assert await tb.run(1, 1, False) == []  # B block cut short by a command
    await expect(Status.B_BLOCK, "B block interrupted")
    if cfg.max_n & (cfg.max_n - 1):
        await tb.send("b_in", [pk.b_beat({"hdr": 1, "row": cfg.max_n, "kb": 0, "mask": 1,
                                          "exp": 1})])
        await expect(Status.B_RANGE, "B row >= max_n")
    assert await tb.run(0, 1, False) == []
    await expect(Status.SHAPE, "m = 0")
    assert await tb.run(1, cfg.max_n + 1, False) == []
    await expect(Status.SHAPE, "n > max_n")
    assert await tb.run(cfg.max_m + 1, 1, False) == []
    await expect(Status.SHAPE, "m > max_m")
    await tb.send("a_in", [pk.a_beat(dict(hdr, row=2)), pk.a_beat({"hdr": 0, "mant": 1})])
    assert await tb.run(1, 1, False) == []
    await expect(Status.SHAPE, "A rows beyond m")
    if cfg.groups & (cfg.groups - 1):
        await tb.send("om_in", [pk.om_word({"row": 0, "grp": cfg.groups, "bits": 1})])
        await expect(Status.M_RANGE, "mask group >= max_n / R")
    cmd3 = pk.command("RUN") | (3 << pk.cmd["op"][0])
    await tb.send("cmd", [cmd3])
    await expect(Status.CMD, "bad op")
    # and the engine still works
    a = random_operand(rng, m, k, 0.5)
    await tb.check_tile(a, random_operand(rng, n, k, 0.0), label="after errors")
