# amaranth: UnusedElaboratable=no
"""HBM v1 decoder against ``golden.hbm.decode``: Amaranth simulator and Verilator."""

import numpy as np
import pytest
from amaranth.hdl import Fragment, Value
from amaranth.sim import Simulator

import golden.hbm
from hdl.hbm_decoder import DECODER_CMD, DecodeError, HBMDecoder, decoder_cmd_layout
from verif.harness import run_cocotb
from verif.stream_budget import decoder_cmd_word as cmd_word
from verif.stream_budget import golden_budget as _golden_budget
from verif.streams import (
    Pacer,
    bfp_edge_tensor,
    bfp_tensor,
    bytes_to_beats,
    golden_decode,
    malformed_streams,
    pack_beat,
    scatter_beats,
    stream_put,
    unpack_bfp_block,
)


@pytest.mark.parametrize("width", [0, 8, 16, 128, 64.0, "32", None])
def test_bus_width_is_validated(width):
    with pytest.raises(ValueError, match=rf"^Bus width must be 32 or 64, not {width!r}$"):
        HBMDecoder(width)


@pytest.mark.parametrize("depth", [0, 1, 3, -2, 4.0, "8", True, None])
def test_fifo_depth_is_validated(depth):
    with pytest.raises(ValueError, match=rf"^FIFO depth must be an even integer >= 2, not "
                                         rf"{depth!r}$"):
        HBMDecoder(64, depth)


@pytest.mark.parametrize("lanes", [0, 3, 5, 32, -4, 4.0, "4", True, None])
def test_lanes_is_validated(lanes):
    with pytest.raises(ValueError, match=rf"^Lanes must be one of 16, 8, 4, 2, 1, not "
                                         rf"{lanes!r}$"):
        HBMDecoder(64, lanes=lanes)


def test_lanes_is_keyword_only():
    with pytest.raises(TypeError):
        HBMDecoder(64, 256, 4)


@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("lanes", [16, 8, 4, 2, 1])
def test_parameters_are_properties(width, lanes):
    dut = HBMDecoder(width, 6, lanes=lanes)
    assert (dut.bus_width, dut.fifo_depth, dut.lanes) == (width, 6, lanes)
    Fragment.get(dut, None)
    assert HBMDecoder(width).lanes == 16


def test_error_codes_cover_golden_errors():
    # Every verdict the classifier can return is a DecodeError member, and vice versa.
    from verif.streams import _GOLDEN_ERRORS
    names = {name for _, name in _GOLDEN_ERRORS} | {"NONE"}
    assert names == {e.name for e in DecodeError}


def run_decoder(cases, bus_width, rng, in_pacer=None, out_pacer=None, scatter=False,
                fifo_depth=64, lanes=16):
    """Decode ``cases`` (list of ``(data, n_blocks)`` or ``(data, n_blocks, budget)``) one after
    the other in one simulation.

    Returns a list of ``(code name, [(E, mantissas), ...])`` per case.
    """
    dut = HBMDecoder(bus_width, fifo_depth, lanes=lanes)
    taken = []
    results = []

    async def drive(ctx):
        for data, n_blocks, *budget in cases:
            beats = (scatter_beats(rng, data, bus_width) if scatter
                     else bytes_to_beats(data, bus_width))
            start = len(taken)
            await stream_put(ctx, dut.cmd, [cmd_word(n_blocks, *budget)])
            await stream_put(ctx, dut.i, [pack_beat(bus_width, *b) for b in beats], in_pacer)
            # Never hangs: the tensor finishes within a bound set by the stream's length.
            for _ in range(100 * (len(data) + n_blocks) + 1000):
                if not ctx.get(dut.busy):
                    break
                await ctx.tick()
            assert not ctx.get(dut.busy), f"decoder still busy ({n_blocks} blocks)"
            await ctx.tick()  # let the sink record a word taken at the last edge
            results.append((DecodeError(ctx.get(dut.code)).name, taken[start:]))
            assert ctx.get(dut.error) == (ctx.get(dut.code) != DecodeError.NONE)

    async def sink(ctx):
        while True:
            ready = out_pacer is None or not out_pacer.stall()
            ctx.set(dut.o.ready, int(ready))
            _, _, valid, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.as_value())
            if valid and ready:
                taken.append(unpack_bfp_block(payload))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(sink, background=True)
    sim.run()
    return results


def golden_budget(data, n_blocks):
    """:func:`verif.stream_budget.golden_budget` as ``(name, exponents, mantissas)``."""
    return _golden_budget(data, n_blocks)[:3]


def check_case(n, got, data, n_blocks, exp=None, mant=None, emitted=None, budget=False):
    """Scoreboard one decoded case against the golden model (``read_stream`` if ``budget``)."""
    code, blocks = got
    want, we, wm = (golden_budget if budget else golden_decode)(data, n_blocks)
    assert code == want, f"case {n}: code {code}, golden says {want}"
    if want == "NONE":
        assert len(blocks) == n_blocks, f"case {n}: {len(blocks)} blocks for {n_blocks}"
        for b, (e, m) in enumerate(blocks):
            assert e == we[b] and np.array_equal(m, wm[b]), f"case {n} block {b}"
    else:
        if emitted is not None:
            assert len(blocks) == emitted, f"case {n}: {len(blocks)} blocks, want {emitted}"
        assert len(blocks) <= n_blocks
        if exp is not None:
            for b, (e, m) in enumerate(blocks):
                assert e == exp[b] and np.array_equal(m, mant[b]), f"case {n} block {b}"


def valid_tensors(rng):
    out = [bfp_edge_tensor()]
    for nblk in (0, 1, 15, 16, 17, 32, 33):
        for s in (0.0, 0.9, 1.0):
            out.append(bfp_tensor(rng, nblk, s))
    out.append(bfp_tensor(rng, 90, 0.6, clustered=True, extremes=True))
    return out


LANES = [16, 4, 1]  #: the decoders every randomized check runs on


@pytest.mark.parametrize("bus_width,fifo_depth,lanes", [
    (32, 64, 16), (64, 64, 16), (64, 2, 16), (32, 64, 4), (64, 2, 4), (32, 2, 1), (64, 64, 1),
    (64, 64, 8), (32, 64, 2)])
def test_valid_streams(rng, bus_width, fifo_depth, lanes):
    tensors = valid_tensors(rng)
    cases = [(golden.hbm.encode(e, m), len(e)) for e, m in tensors]
    got = run_decoder(cases, bus_width, rng, fifo_depth=fifo_depth, lanes=lanes)
    for n, ((data, nblk), g) in enumerate(zip(cases, got, strict=True)):
        check_case(n, g, data, nblk)


@pytest.mark.parametrize("bus_width,lanes", [
    (32, 16), (64, 16), (32, 4), (64, 4), (64, 1), pytest.param(32, 1, marks=pytest.mark.slow)])
def test_malformed_streams_and_recovery(rng, bus_width, lanes):
    cases, meta = [], []
    for nblk, s in ((1, 0.0), (20, 0.5), (40, 0.9), (5, 1.0), (0, 0.0)):
        e, m = bfp_tensor(rng, nblk, s)
        for kind, data, emitted in malformed_streams(rng, e, m):
            assert golden_decode(data, nblk)[0] == kind, kind  # the case does what it says
            cases.append((data, nblk))
            meta.append((e, m, emitted))
            # after every bad stream, a good one must decode
            cases.append((golden.hbm.encode(e, m), nblk))
            meta.append((e, m, None))
    got = run_decoder(cases, bus_width, rng, Pacer(rng, 0.3), Pacer(rng, 0.3), scatter=True,
                      lanes=lanes)
    for n, ((data, nblk), g, (e, m, emitted)) in enumerate(zip(cases, got, meta, strict=True)):
        check_case(n, g, data, nblk, e, m, emitted)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bus_width", [32, 64])
def test_latency(bus_width, lanes):
    # A one-block tensor in one beat accepted in cycle 0: in the byte buffer in cycle 3, the
    # block valid on o in cycle 4 (module docstring), or 3 + 16/lanes for a nonzero block (the
    # 64-bit case) with fewer lanes; an all-zero block takes one cycle whatever the lanes.
    mant = np.zeros((1, 16), np.int8)
    exp = np.zeros(1, np.uint8)
    if bus_width == 64:  # a nonzero block needs 6 bytes: one beat only on the wide bus
        mant[0, 3], exp[0] = 5, 130
    data = golden.hbm.encode(exp, mant)
    assert len(data) <= bus_width // 8
    dut = HBMDecoder(bus_width, lanes=lanes)
    seen = {}

    async def tb(ctx):
        await stream_put(ctx, dut.cmd, [1])
        await stream_put(ctx, dut.i, [pack_beat(bus_width, *bytes_to_beats(data, bus_width)[0])])
        cycle = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycle += 1
            assert cycle < 20
        seen["cycle"] = cycle
        seen["block"] = unpack_bfp_block(ctx.get(Value.cast(dut.o.payload)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert seen["cycle"] == (3 + 16 // lanes if bus_width == 64 else 4)
    assert seen["block"][0] == exp[0] and np.array_equal(seen["block"][1], mant[0])


@pytest.mark.parametrize("bus_width,fifo_depth,lanes", [
    (32, 64, 16), (32, 6, 16), (64, 2, 16), (32, 6, 4), (64, 2, 4), (64, 6, 1), (32, 2, 1)])
def test_queue_holds_fifo_depth_beats(rng, bus_width, fifo_depth, lanes):
    # Before its cmd no beat leaves the queue: it takes exactly fifo_depth beats of a longer
    # stream while the source waits, and the tensor decodes once the cmd comes.
    exp, mant = bfp_tensor(rng, 40, 0.3)
    data = golden.hbm.encode(exp, mant)
    beats = [pack_beat(bus_width, *b) for b in bytes_to_beats(data, bus_width)]
    assert len(beats) > fifo_depth + 1
    dut = HBMDecoder(bus_width, fifo_depth, lanes=lanes)
    held = {}

    async def cmd(ctx):
        for _ in range(fifo_depth + 10):
            await ctx.tick()
        held["count"] = len(held["taken"])
        await stream_put(ctx, dut.cmd, [len(exp)])

    # cycles: never hangs (a nonzero block takes 16 / lanes cycles)
    limit = fifo_depth + 10 + 4 * len(beats) + 16 // lanes * len(exp) + 100

    async def source(ctx):
        held["taken"] = []
        for _ in range(limit):
            if len(held["taken"]) == len(beats):
                break
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), beats[len(held["taken"])])
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            if ready:
                held["taken"].append(beats[len(held["taken"])])
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cmd)
    sim.add_testbench(source)
    blocks = []

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(limit):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid,
                                                           dut.o.payload.as_value())
            if valid:
                blocks.append(unpack_bfp_block(payload))
            if len(blocks) == len(exp) and not ctx.get(dut.busy):
                break
        held["code"] = DecodeError(ctx.get(dut.code)).name

    sim.add_testbench(sink)
    sim.run()
    assert held["count"] == fifo_depth
    assert len(held["taken"]) == len(beats)
    assert held["code"] == "NONE"
    assert len(blocks) == len(exp)
    for b, (e, m) in enumerate(blocks):
        assert e == exp[b] and np.array_equal(m, mant[b]), f"block {b}"


@pytest.mark.parametrize("lanes", [16, 8, 4, 2, 1])
@pytest.mark.parametrize("bus_width", [32, 64])
def test_intake_takes_16_bytes_per_cycle(bus_width, lanes):
    # 16 blocks of 12 nonzeros (15 bytes each, 242 with the L1 mask) banked in the queue before
    # the cmd: the buffer takes 16 bytes a cycle whatever the bus width, so the blocks leave at
    # one per cycle after the first (2 + 15 bytes, then 15 per cycle against 16 taken); a
    # two-beat intake on the 32-bit bus (8 bytes a cycle) would need about 30 cycles. With
    # fewer lanes a nonzero block takes 16 / lanes cycles, and the 8-byte intake keeps up.
    period = 16 // lanes
    mant = np.zeros((16, 16), np.int8)
    mant[:, :12] = np.arange(1, 13)
    exp = np.full(16, 100, np.uint8)
    data = golden.hbm.encode(exp, mant)
    assert len(data) == 242
    beats = [pack_beat(bus_width, *b) for b in bytes_to_beats(data, bus_width)]
    assert len(beats) <= 64  # all fit in the default queue
    dut = HBMDecoder(bus_width, lanes=lanes)
    seen = []

    async def tb(ctx):
        await stream_put(ctx, dut.i, beats)  # the queue takes beats before the cmd
        for _ in range(4):
            await ctx.tick()
        await stream_put(ctx, dut.cmd, [16])
        cycle = 0
        while len(seen) < 16:
            ctx.set(dut.o.ready, 1)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            cycle += 1
            if valid:
                seen.append((cycle, unpack_bfp_block(payload)))
            assert cycle < 100 + 16 * period

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    cycles = [c for c, _ in seen]
    # one block every cycle (every `period` cycles)
    assert cycles == list(range(cycles[0], cycles[0] + 16 * period, period)), cycles
    for b, (_, (e, m)) in enumerate(seen):
        assert e == exp[b] and np.array_equal(m, mant[b]), f"block {b}"


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bus_width", [32, 64])
def test_random_corruption(rng, bus_width, lanes):
    # Random byte flips: whatever golden says (often still a valid stream), the RTL says too.
    cases = []
    for _ in range(30):
        e, m = bfp_tensor(rng, int(rng.integers(1, 40)), float(rng.choice([0.3, 0.8, 0.97])))
        d = bytearray(golden.hbm.encode(e, m))
        for _ in range(int(rng.integers(1, 3))):
            d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        cases.append((bytes(d), len(e)))
    got = run_decoder(cases, bus_width, rng, Pacer(rng, 0.2), Pacer(rng, 0.2), lanes=lanes)
    for n, ((data, nblk), g) in enumerate(zip(cases, got, strict=True)):
        check_case(n, g, data, nblk)


def test_cmd_layout():
    # blocks in the low 32 bits (an integer payload n is n blocks without a budget), budget above
    assert decoder_cmd_layout() is DECODER_CMD
    assert (DECODER_CMD["blocks"].offset, DECODER_CMD["blocks"].shape.width) == (0, 32)
    assert (DECODER_CMD["budget"].offset, DECODER_CMD["budget"].shape.width) == (32, 1)
    dut = HBMDecoder(64)
    assert dut.cmd.payload.shape() == DECODER_CMD
    Fragment.get(dut, None)


def garbage(rng, kind=None):
    """Random bytes to put after a stream inside its budget (zeros, padding-like or random)."""
    kind = kind if kind is not None else int(rng.integers(0, 4))
    n = int(rng.integers(0, 120))
    if kind == 0:
        return bytes(n)  # zeros: more than 7 would be TRAILING_DATA without a budget
    if kind == 1:
        return bytes(int(rng.integers(1, 8))) + b"\x01"  # BAD_PADDING without a budget
    if kind == 2:
        return b""
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def budget_cases(rng):
    """``[(data, n_blocks, True, (exp, mant) or None, emitted or None)]`` for budget mode."""
    out = []
    for nblk, s, c in ((0, 0.0, False), (1, 0.0, False), (1, 1.0, False), (16, 0.5, False),
                       (17, 0.9, False), (33, 0.3, True), (70, 0.7, True)):
        e, m = bfp_tensor(rng, nblk, s, clustered=c)
        data = golden.hbm.encode(e, m)
        for kind in range(4):
            out.append((data + garbage(rng, kind), nblk, True, (e, m), None))
        # every error of the plain check but the trailing ones, garbage after the stream
        for kind, bad, emitted in malformed_streams(rng, e, m):
            tail = b"" if kind == "TRUNCATED" else garbage(rng)
            out.append((bad + tail, nblk, True, (e, m),
                        emitted if kind not in ("NONE", "TRAILING_DATA", "BAD_PADDING") else None))
        # truncated inside the budget: the budget ends before the stream does
        if data:
            cut = int(rng.integers(0, len(data)))
            out.append((data[:cut], nblk, True, (e, m), None))
    return out


@pytest.mark.parametrize("bus_width,lanes", [
    (32, 16), (64, 16), (64, 4), pytest.param(32, 4, marks=pytest.mark.slow),
    pytest.param(64, 1, marks=pytest.mark.slow), pytest.param(32, 1, marks=pytest.mark.slow)])
def test_budget_against_read_stream(rng, bus_width, lanes):
    # Budget mode against golden.jobs.read_stream, every case followed by a plain stream of the
    # same tensor (recovery, and budget off again), under random bubbles and back-pressure.
    cases = []
    for data, nblk, budget, tensor, emitted in budget_cases(rng):
        cases.append((data, nblk, budget, tensor, emitted))
        e, m = tensor
        cases.append((golden.hbm.encode(e, m) + bytes(int(rng.integers(0, 8))), nblk, False,
                      tensor, None))
    kinds = {golden_budget(d, n)[0] for d, n, *_ in cases}
    assert kinds == {e.name for e in DecodeError} - {"TRAILING_DATA", "BAD_PADDING"}, kinds
    # the same bytes without a budget fail where garbage follows the stream: the mode matters
    assert any(golden_decode(d, n)[0] in ("TRAILING_DATA", "BAD_PADDING")
               and golden_budget(d, n)[0] == "NONE" for d, n, *_ in cases)
    got = run_decoder([c[:3] for c in cases], bus_width, rng, Pacer(rng, 0.3), Pacer(rng, 0.3),
                      scatter=True, lanes=lanes)
    for n, ((data, nblk, budget, (e, m), emitted), g) in enumerate(zip(cases, got, strict=True)):
        check_case(n, g, data, nblk, e, m, emitted, budget=budget)


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bus_width", [32, 64])
def test_budget_random_corruption(rng, bus_width, lanes):
    cases = []
    for _ in range(30):
        e, m = bfp_tensor(rng, int(rng.integers(0, 40)), float(rng.choice([0.3, 0.8, 0.97])))
        d = bytearray(golden.hbm.encode(e, m) + garbage(rng))
        if d:
            for _ in range(int(rng.integers(1, 3))):
                d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        cases.append((bytes(d), len(e), True))
    got = run_decoder(cases, bus_width, rng, Pacer(rng, 0.2), Pacer(rng, 0.2), lanes=lanes)
    for n, ((data, nblk, _), g) in enumerate(zip(cases, got, strict=True)):
        check_case(n, g, data, nblk, budget=True)


def run_tail(bus_width, rng, data, n_blocks, budget=True, in_pacer=None, out_pacer=None,
             preload=0, lanes=16, fifo_depth=256):
    """One tensor; per cycle: tail, the block count taken so far, o.valid, i's last handshake.

    ``preload`` beats go into the queue before the cmd. Returns ``(trace, cmd_cycle, code)``.
    """
    dut = HBMDecoder(bus_width, fifo_depth, lanes=lanes)
    beats = [pack_beat(bus_width, *b) for b in bytes_to_beats(data, bus_width)]
    trace = []
    info = {}

    async def source(ctx):
        await stream_put(ctx, dut.i, beats[:preload])
        for _ in range(8):
            await ctx.tick()
        info["cmd_at"] = len(trace)
        await stream_put(ctx, dut.cmd, [cmd_word(n_blocks, budget)])
        await stream_put(ctx, dut.i, beats[preload:], in_pacer)

    async def monitor(ctx):
        taken = 0
        for _ in range(30 * len(beats) + 200):
            ready = out_pacer is None or not out_pacer.stall()
            ctx.set(dut.o.ready, int(ready))
            _, _, tail, ov, iv, ir, il, busy = await ctx.tick().sample(
                dut.tail, dut.o.valid, dut.i.valid, dut.i.ready, dut.i.payload.last, dut.busy)
            trace.append((tail, taken, ov, iv and ir and il))
            if ov and ready:
                taken += 1
            if "cmd_at" in info and not busy and len(trace) > info["cmd_at"] + 2:
                break
        info["code"] = DecodeError(ctx.get(dut.code)).name

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(monitor)
    sim.run()
    return trace, info["cmd_at"], info["code"]


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bus_width", [32, 64])
def test_tail_timing(rng, bus_width, lanes):
    # tail is high from the first cycle the last block is valid on o up to and including the
    # cycle the beat with last is accepted on i; low otherwise (and always without a budget).
    seen_high = 0
    for trial in range(12):
        nblk = int(rng.integers(1, 40))  # 0 blocks: test_tail_zero_blocks
        e, m = bfp_tensor(rng, nblk, float(rng.choice([0.0, 0.5, 0.95])))
        data = golden.hbm.encode(e, m) + rng.integers(0, 256, int(rng.integers(0, 200)),
                                                      dtype=np.uint8).tobytes()
        budget = trial % 4 != 3
        preload = int(rng.integers(0, 6)) if trial % 3 == 0 else 0
        trace, _, code = run_tail(bus_width, rng, data, nblk, budget, Pacer(rng, 0.5),
                                  Pacer(rng, 0.3), preload, lanes,
                                  # a short queue: the slower narrow decoders would take the
                                  # whole stream before the last block and tail never rise
                                  256 if lanes == 16 else 6)
        assert code == (golden_budget if budget else golden_decode)(data, nblk)[0]
        high = [c for c, (t, *_) in enumerate(trace) if t]
        if not budget:
            assert not high
            continue
        # the first cycle the last block is valid on o
        start = next(c for c, (_, taken, ov, _) in enumerate(trace) if ov and taken == nblk - 1)
        end = next(c for c, (*_, il) in enumerate(trace) if il)  # last accepted on i
        if end < start:
            assert not high, (trial, high, end)
        else:
            assert high == list(range(start, end + 1)), (trial, high[:3], high[-3:], start, end)
            seen_high += 1
    assert seen_high >= 3  # the cases exercise tail


@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("bus_width", [32, 64])
def test_tail_zero_blocks(bus_width, lanes):
    # 0 blocks in budget mode: tail rises the cycle after the cmd is taken, falls after last.
    data = bytes(range(1, 41))
    dut = HBMDecoder(bus_width, lanes=lanes)
    beats = [pack_beat(bus_width, *b) for b in bytes_to_beats(data, bus_width)]
    seen = {}

    async def tb(ctx):
        ctx.set(dut.cmd.valid, 1)
        ctx.set(Value.cast(dut.cmd.payload), cmd_word(0, True))
        assert not ctx.get(dut.tail)
        await ctx.tick()  # the cmd is taken at this edge
        ctx.set(dut.cmd.valid, 0)
        seen["after_cmd"] = ctx.get(dut.tail)
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.tail)
        for k, b in enumerate(beats):
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), b)
            assert ctx.get(dut.i.ready)
            assert ctx.get(dut.tail), k  # high through the cycle the last beat is accepted
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert not ctx.get(dut.tail)
        for _ in range(10):
            await ctx.tick()
        seen["busy"] = ctx.get(dut.busy)
        seen["code"] = ctx.get(dut.code)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert seen == {"after_cmd": 1, "busy": 0, "code": DecodeError.NONE}


@pytest.mark.cocotb
@pytest.mark.parametrize("bus_width", [32, 64])
def test_verilator(seed, bus_width):
    run_cocotb(HBMDecoder(bus_width), name=f"hbm_decoder_{bus_width}",
               test_module="verif.cocotb.hbm_decoder_tb", test_id=f"hbm_decoder_{bus_width}",
               seed=seed, extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 1500})


@pytest.mark.cocotb
@pytest.mark.parametrize("bus_width,lanes", [(64, 4), (32, 1)])
def test_verilator_narrow(seed, bus_width, lanes):
    run_cocotb(HBMDecoder(bus_width, lanes=lanes), name=f"hbm_decoder_{bus_width}_l{lanes}",
               test_module="verif.cocotb.hbm_decoder_tb",
               test_id=f"hbm_decoder_{bus_width}_l{lanes}", seed=seed,
               extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 1500})


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("bus_width", [32, 64])
def test_verilator_long(seed, bus_width):
    run_cocotb(HBMDecoder(bus_width), name=f"hbm_decoder_{bus_width}",
               test_module="verif.cocotb.hbm_decoder_tb",
               test_id=f"hbm_decoder_{bus_width}_long", seed=seed,
               extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 20000})
