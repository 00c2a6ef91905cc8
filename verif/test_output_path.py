# amaranth: UnusedElaboratable=no
"""Output path (hdl.output_path) against the golden model: Amaranth simulator and Verilator.

Every drain is checked byte for byte: ``o_fwd`` against ``golden.hbm.encode`` of the (ReLU'd)
tile's ``to_bfp()`` (or the RAW records), ``o_filt`` against the encoding of
``golden.sparsity.filter`` of it, the statistics against ``golden.sparsity.stats``.
"""

import dataclasses
import json

import numpy as np
import pytest
from amaranth.hdl import Fragment, Value
from amaranth.sim import Simulator

from golden.gemm import Accumulator
from hdl.config import EngineConfig, get_config
from hdl.output_path import Op, OutputPath, Status, buffer_geometry, cmd_layout
from hdl.output_raw import RawSerializer
from verif.harness import run_cocotb
from verif.output_path_model import (
    Bench,
    Drain,
    Packer,
    StatsModel,
    check_drain,
    random_tile,
    run_scenario,
    scenario,
    task_beats,
)
from verif.streams import Pacer, beats_to_bytes, unpack_beat

TINY = get_config("tiny")
SMALL = get_config("small")
#: R = 4 with three column blocks, the last one ragged (max_n = 40): 4 groups per word
R4 = EngineConfig("r4", rows=4, lanes=1, max_m=6, max_n=40, max_k=64, a_nz_depth=64,
                  a_hdr_depth=8)
#: R = 8, two groups per word
R8 = EngineConfig("r8", rows=8, lanes=1, max_m=5, max_n=24, max_k=64, a_nz_depth=64,
                  a_hdr_depth=8)


# ---- parameters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [None, "tiny", 4, TINY.__dict__])
def test_cfg_is_validated(cfg):
    with pytest.raises(TypeError, match=rf"^cfg must be an EngineConfig, not {cfg!r}$"):
        OutputPath(cfg)


@pytest.mark.parametrize("width", [0, 16, 48, 128, 64.0, "32", True, None])
def test_bus_width_is_validated(width):
    with pytest.raises(ValueError, match=rf"^Bus width must be 32 or 64, not {width!r}$"):
        OutputPath(TINY, width)


@pytest.mark.parametrize("width", [0, 8, 64.0])
def test_raw_serializer_bus_width_is_validated(width):
    with pytest.raises(ValueError, match=rf"^Bus width must be 32 or 64, not {width!r}$"):
        RawSerializer(width)


def test_properties_and_layouts():
    dut = OutputPath(SMALL, 32)
    assert dut.cfg is SMALL and dut.bus_width == 32
    Fragment.get(dut, None)
    lay = cmd_layout(SMALL)
    # m and n hold one more bit than an index, so that max_m / max_n (and too large) fit
    assert lay["m"].width == 6 and lay["n"].width == 6
    assert [f for f, _ in lay] == ["op", "m", "n", "relu", "raw", "fwd", "filt", "clear_stats",
                                   "te", "tm", "base"]
    assert {op.name: op.value for op in Op} == {"DRAIN": 0, "CLEAR_STATS": 1}
    assert {s.name: s.value for s in Status} == {"OK": 0, "SHAPE": 1, "CMD": 2, "NO_OUTPUT": 3}
    # 16 accumulators of 42 bits per word, one word per row and column block
    assert buffer_geometry(TINY) == {"column_blocks": 1, "words": 16, "word_bits": 672,
                                     "bits": 10752}
    assert buffer_geometry(R4)["column_blocks"] == 3
    assert buffer_geometry(get_config("default"))["bits"] == 64 * 4 * 672


def test_packer_rejects_out_of_range_fields():
    with pytest.raises(ValueError, match=r"^Field te = 256 does not fit 8 bits$"):
        Packer(TINY).command(Drain(te=256))


# ---- scenarios ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, bus_width, in_prob, out_prob", [
    (TINY, 32, 0.0, 0.0), (TINY, 32, 0.3, 0.5), (SMALL, 64, 0.3, 0.0), (SMALL, 64, 0.0, 0.5),
    (R4, 64, 0.3, 0.5), (R8, 32, 0.0, 0.3)], ids=lambda v: getattr(v, "name", str(v)))
def test_random_drains(cfg, bus_width, in_prob, out_prob, rng):
    steps = scenario(rng, cfg, tiles=4)
    run_scenario(cfg, bus_width, rng, steps, in_prob, out_prob)


@pytest.mark.parametrize("drain_lanes", [4, 1])
def test_random_drains_narrow_units(drain_lanes, rng):
    """The board tops' narrow converter and filter (``drain_lanes``): same bytes, same
    statistics as the 16-wide ones (the model knows no lanes)."""
    steps = scenario(rng, TINY, tiles=4)
    run_scenario(TINY, 32, rng, steps, 0.3, 0.3, drain_lanes=drain_lanes)


@pytest.mark.parametrize("lanes", [0, 3, 32, 4.0, True, "4"])
def test_drain_lanes_are_validated(lanes):
    with pytest.raises(ValueError, match=r"Drain lanes must be one of 16, 8, 4, 2, 1"):
        OutputPath(TINY, 32, drain_lanes=lanes)


def test_ragged_and_stale_columns(rng):
    """R = 4: a full tile, then narrower ones (n not a multiple of 16 or of R); the groups of a
    block the engine does not write for the narrow tile hold the old tile's values, and the
    drain must still emit zeros there."""
    cfg = R4
    steps = []
    big = random_tile(rng, cfg.max_m, cfg.max_n, "gemm")
    steps.append(("tile", big, task_beats(cfg, big, rng)))
    for n in (40, 33, 17, 16, 5, 1):
        acc = random_tile(rng, cfg.max_m, n, "extreme")
        steps.append(("tile", acc, task_beats(cfg, acc, rng)))
        for relu in (False, True):
            steps.append(("drain", Drain(m=cfg.max_m, n=n, relu=relu, fwd=True, filt=True,
                                         te=130, tm=200, clear_stats=True), acc))
        steps.append(("drain", Drain(m=cfg.max_m, n=n, raw=True), acc))
    run_scenario(cfg, 64, rng, steps)


def test_edge_tiles(rng):
    """m = 1, all zero, ea near 0 and 1023, saturating blocks, masked tasks, both buses."""
    for cfg, bw in ((SMALL, 64), (TINY, 32)):
        steps = []
        for kind, (m, n) in (("zero", (cfg.max_m, cfg.max_n)), ("ea_low", (1, cfg.max_n)),
                             ("ea_high", (2, cfg.max_n - 1)), ("extreme", (3, cfg.max_n)),
                             ("masked", (1, 3))):
            acc = random_tile(rng, m, n, kind)
            steps.append(("tile", acc, task_beats(cfg, acc, rng)))
            steps.append(("drain", Drain(m=m, n=n, fwd=True, filt=True, te=120, tm=129,
                                         clear_stats=True), acc))
            steps.append(("drain", Drain(m=m, n=n, relu=True, raw=True), acc))
            steps.append(("drain", Drain(m=m, n=n, relu=True, fwd=False, filt=True, te=255,
                                         tm=255), acc))
        run_scenario(cfg, bw, rng, steps)


def test_drain_accepted_with_the_last_beat(rng):
    """The engine's last beat and the DRAIN in the same cycle: the beat is in the tensor."""
    for cfg in (TINY, SMALL):
        bench = Bench(cfg, 64, rng)
        acc = random_tile(rng, cfg.max_m, cfg.max_n, "gemm")
        beats = task_beats(cfg, acc, rng)
        beats.sort(key=lambda b: b[:2] == (0, 0))  # (0, 0) last: it is read first
        d = Drain(m=cfg.max_m, n=cfg.max_n, fwd=True, filt=True, te=127, tm=150,
                  clear_stats=True)

        async def body(ctx, bench=bench, beats=beats, d=d, acc=acc):
            await bench.write_beats(ctx, beats[:-1])
            got = await bench.command(ctx, d, beat=beats[-1])
            check_drain(0, d, acc, got, StatsModel())

        bench.run(body)


def test_statistics_accumulate_and_clear(rng):
    """Statistics add up over drains without clear_stats, restart with it or CLEAR_STATS; a
    RAW drain leaves them alone; a drain with filt = 0 still counts (its filtered copy is
    dropped)."""
    cfg = SMALL
    a = random_tile(rng, 5, 20, "gemm")
    b = random_tile(rng, 7, 32, "gemm")
    steps = [("tile", a, task_beats(cfg, a, rng)),
             ("drain", Drain(m=5, n=20, filt=True, fwd=False, te=125, tm=140,
                             clear_stats=True), a),
             ("drain", Drain(m=5, n=20, raw=True), a),
             ("tile", b, task_beats(cfg, b, rng)),
             ("drain", Drain(m=7, n=32, fwd=True, filt=False, te=126, tm=150, base=100), b),
             ("drain", Drain(m=7, n=32, fwd=True, filt=True, te=124, tm=250, base=100), b),
             ("clear",),
             ("drain", Drain(m=7, n=32, fwd=False, filt=True, te=1, tm=1, base=0), b)]
    run_scenario(cfg, 64, rng, steps)


@pytest.mark.parametrize("out_prob", [(0.9, 0.0), (0.0, 0.9)], ids=["fwd_slow", "filt_slow"])
def test_fork_with_one_output_stalled(rng, out_prob):
    """A dense 64 x 64 tile (256 blocks of 19 bytes) with one output nearly blocked: that
    encoder's queues fill while the other output still takes blocks, so the fork hands blocks
    to one branch before the other; nothing may be lost or sent twice."""
    cfg = get_config("default")
    a = random_tile(rng, cfg.max_m, cfg.max_n, "gemm")
    while (a.mant == 0).mean() > 0.2:  # dense enough to fill the record queues
        a = random_tile(rng, cfg.max_m, cfg.max_n, "gemm")
    steps = [("tile", a, task_beats(cfg, a, rng)),
             ("drain", Drain(m=cfg.max_m, n=cfg.max_n, fwd=True, filt=True, te=120, tm=1,
                             clear_stats=True), a)]
    run_scenario(cfg, 64, rng, steps, 0.0, out_prob)


def test_command_errors(rng):
    """SHAPE (m or n zero or too large): empty tensor on each enabled output, nothing counted;
    NO_OUTPUT and unknown ops: done the next cycle, nothing sent; no state change."""
    cfg = TINY
    bench = Bench(cfg, 64, rng)
    acc = random_tile(rng, 3, 9, "gemm")

    async def body(ctx):
        await bench.write_beats(ctx, task_beats(cfg, acc, rng))
        ok = await bench.command(ctx, Drain(m=3, n=9, fwd=True, filt=True, clear_stats=True))
        assert ok["status"] == Status.OK
        counted = ok["stats"]
        assert counted["values"] == 3 * 16
        for m, n in ((0, 5), (3, 0), (cfg.max_m + 1, 5), (3, cfg.max_n + 1), (31, 31), (0, 0)):
            for flags in ({"fwd": True, "filt": True}, {"fwd": False, "filt": True},
                          {"raw": True}):
                got = await bench.command(ctx, Drain(m=m, n=n, clear_stats=True, **flags))
                assert got["status"] == Status.SHAPE
                want_f = flags.get("fwd", False) or flags.get("raw", False)
                want_s = flags.get("filt", False) and not flags.get("raw", False)
                assert got["fwd"] == (b"" if want_f else None)
                assert got["filt"] == (b"" if want_s else None)
                for name, want in (("fwd", want_f), ("filt", want_s)):
                    if want:  # exactly one beat, keep = 0, last = 1
                        assert got[name + "_beats"] == 1
                assert got["stats"] == counted, "a refused drain must not touch the statistics"
        got = await bench.command(ctx, Drain(m=3, n=9, fwd=False, filt=False, clear_stats=True))
        assert got["status"] == Status.NO_OUTPUT and got["done_at"] == 1
        assert got["fwd"] is None and got["filt"] is None and got["stats"] == counted
        for op in (2, 3):
            got = await bench.command(ctx, Drain(m=3, n=9, op=op))
            assert got["status"] == Status.CMD and got["done_at"] == 1
            assert got["fwd"] is None and got["filt"] is None
        # the buffer is unchanged: the same drain gives the same bytes again
        again = await bench.command(ctx, Drain(m=3, n=9, fwd=True, filt=True, clear_stats=True))
        assert again["fwd"] == ok["fwd"] and again["filt"] == ok["filt"]
        assert again["stats"] == counted
        clr = await bench.command(ctx, Drain(op="CLEAR_STATS"))
        assert clr["status"] == Status.OK
        assert clr["stats"] == {"values": 0, "zeros": 0, "filtered_zeros": 0, "hist": [0] * 32}
        assert clr["done_at"] == 4  # the clear passes the filter's two statistics stages

    bench.run(body)


def test_out_of_range_beats_are_dropped(rng):
    """grp >= max_n / R (or row >= max_m) cannot come from the engine: dropped, i_dropped."""
    cfg = R8  # 3 groups of 8: grp 3 is out of range; rows 0..4: row 5..7 are
    bench = Bench(cfg, 64, rng)
    acc = random_tile(rng, cfg.max_m, cfg.max_n, "gemm")

    async def body(ctx):
        dut = bench.dut
        await bench.write_beats(ctx, task_beats(cfg, acc, rng))
        assert not ctx.get(dut.i_dropped)
        await bench.write_beats(ctx, [(0, 3, [1] * 8, [300] * 8)])
        assert ctx.get(dut.i_dropped)
        got = await bench.command(ctx, Drain(m=cfg.max_m, n=cfg.max_n, raw=True))
        assert not ctx.get(dut.i_dropped), "cleared by the next command"
        await bench.write_beats(ctx, [(7, 0, [5] * 8, [300] * 8)])
        assert ctx.get(dut.i_dropped)
        check_drain(0, Drain(m=cfg.max_m, n=cfg.max_n, raw=True), acc, got, StatsModel())

    bench.run(body)


def test_carry_read_port(rng):
    """carry_en + (row, grp) in cycle c gives the task's R accumulators in cycle c + 1; while a
    drain reads the buffer carry_ready is low and carry_en is ignored."""
    for cfg in (R4, SMALL):
        bench = Bench(cfg, 64, rng)
        acc = random_tile(rng, cfg.max_m, cfg.max_n - 3, "extreme")
        beats = task_beats(cfg, acc, rng)

        async def body(ctx, cfg=cfg, bench=bench, acc=acc, beats=beats):
            dut, pk = bench.dut, bench.pk
            await bench.write_beats(ctx, beats)
            want = {(b[0], b[1]): (b[2], b[3]) for b in beats}
            order = [beats[k][:2] for k in rng.permutation(len(beats))]
            # back-to-back reads, one per cycle
            prev = None
            checked = 0
            for addr in order + [None]:
                assert ctx.get(dut.carry_ready)
                ctx.set(dut.carry_en, int(addr is not None))
                if addr is not None:
                    ctx.set(Value.cast(dut.carry_addr), pk.carry_addr(*addr))
                _, _, word = await ctx.tick().sample(Value.cast(dut.carry_data))
                if prev is not None:
                    assert pk.carry_data(word) == want[prev], f"carry {prev}"
                    checked += 1
                prev = addr
            assert checked == len(beats)
            # the data is held without carry_en
            last = order[-1]
            await ctx.tick().repeat(3)
            assert pk.carry_data(ctx.get(Value.cast(dut.carry_data))) == want[last]
            # during a drain: carry_ready low, carry_en ignored
            ctx.set(dut.cmd.valid, 1)
            ctx.set(Value.cast(dut.cmd.payload), pk.command(Drain(m=1, n=cfg.max_n, raw=True)))
            await ctx.tick()
            ctx.set(dut.cmd.valid, 0)
            assert not ctx.get(dut.carry_ready)
            ctx.set(dut.o_fwd.ready, 1)
            seen_low = 0
            while not ctx.get(dut.carry_ready):
                seen_low += 1
                ctx.set(dut.carry_en, 1)
                ctx.set(Value.cast(dut.carry_addr), pk.carry_addr(*order[0]))
                await ctx.tick()
            assert seen_low >= 1
            ctx.set(dut.carry_en, 0)
            await ctx.tick().until(dut.done)
            ctx.set(dut.o_fwd.ready, 0)

        bench.run(body)


# ---- timing -------------------------------------------------------------------------------------

def test_one_block_per_cycle_and_latency(rng):
    """Without back-pressure an all-zero tile (2 bytes per 16 blocks: the bus never limits)
    drains at one block per cycle; a tile of 1 block pins the fixed latency. A dense tile is
    bound by the bus: at least 19 bytes per block."""
    cfg = get_config("default")  # 64 x 4 blocks
    bench = Bench(cfg, 64, rng)
    zero = random_tile(rng, cfg.max_m, cfg.max_n, "zero")
    res = {}

    async def body(ctx):
        bench.out_pacers = (Pacer(rng, 0.0), Pacer(rng, 0.0))
        await bench.write_beats(ctx, task_beats(cfg, zero))
        res["zero"] = await bench.command(ctx, Drain(m=cfg.max_m, n=cfg.max_n, fwd=True,
                                                     filt=True))
        res["one"] = await bench.command(ctx, Drain(m=1, n=1, fwd=True, filt=True))
        res["raw1"] = await bench.command(ctx, Drain(m=1, n=1, raw=True))

    bench.run(body)
    blocks = cfg.max_m * 4
    # cycles counted from the command's acceptance: read issued in +1, buffer data +2, masked
    # block into the converter +3, converter output +7 (latency 4) into the fwd encoder and
    # the filter, filtered block into its encoder +8, encoder latency 4: first beats +11/+12;
    # fin flag +1, done +1.
    assert res["one"]["first"] == [11, 12] and res["one"]["done_at"] == 14
    # all-zero tile: 2 bytes per superblock, so the first 8-byte beat waits for the 64th block
    # (+7 + 63 + 4); the last block enters the encoders at +7 + 255: one block per cycle.
    assert res["zero"]["first"] == [7 + 63 + 4, 7 + 63 + 5]
    assert res["zero"]["done_at"] == blocks + 13
    # RAW: the serializer takes the block at +3, its beat is valid at +4
    assert res["raw1"]["first"] == [4, None] and res["raw1"]["done_at"] == 6


@pytest.mark.parametrize("bus_width", [32, 64])
def test_raw_serializer_alone(rng, bus_width):
    """Tokens of 0..16 lanes, the empty tensor, back-pressure: bytes and beat boundaries."""
    from verif.streams import pack_acc_block, stream_get_packets

    dut = RawSerializer(bus_width)
    mant = rng.integers(-(1 << 31), 1 << 31, size=(6, 16))
    exp = rng.integers(0, 1024, size=(6, 16))
    lanes = [16, 1, 0, 7, 16, 3]
    tok_w = []
    acc_bits = 16 * 42
    for k in range(6):
        tok_w.append(pack_acc_block(mant[k], exp[k]) | (lanes[k] << acc_bits)
                     | (int(k == 5) << (acc_bits + 5)))
    tok_w.append(1 << (acc_bits + 5))  # the empty tensor
    res = {}

    async def put(ctx):
        from verif.streams import stream_put
        await stream_put(ctx, dut.i, tok_w, Pacer(rng, 0.3))

    async def get(ctx):
        res["p"] = await stream_get_packets(ctx, dut.o, 2, Pacer(rng, 0.4))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    (p1, p2), _ = res["p"]
    beats = [unpack_beat(bus_width, w) for w in p1]
    want = bytearray()
    for k in range(6):
        for j in range(lanes[k]):
            want += int(mant[k, j]).to_bytes(4, "little", signed=True)
            want += int(exp[k, j]).to_bytes(2, "little") + b"\0\0"
    assert beats_to_bytes(beats, bus_width) == bytes(want)
    assert len(beats) == len(want) // (bus_width // 8)
    assert [unpack_beat(bus_width, w) for w in p2] == [(0, 0, 1)]


# ---- Verilator ----------------------------------------------------------------------------------

def _cocotb(cfg, bus_width, seed, tiles, tag):
    # -O0: the C++ compile of the model takes half the time of the default -Os, and the
    # simulation itself is a few seconds either way
    run_cocotb(OutputPath(cfg, bus_width), name=f"output_path_{cfg.name}",
               test_module="verif.cocotb.output_path_tb", test_id=f"output_path_{cfg.name}_{tag}",
               seed=seed, build_args=["-CFLAGS", "-O0"],
               extra_env={"CFG": json.dumps(dataclasses.asdict(cfg)),
                          "BUS_WIDTH": bus_width, "TILES": tiles})


@pytest.mark.cocotb
@pytest.mark.parametrize("cfg, bus_width", [(TINY, 32), (SMALL, 64)], ids=["tiny", "small"])
def test_verilator(cfg, bus_width, seed):
    _cocotb(cfg, bus_width, seed, tiles=40, tag="fast")


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("cfg, bus_width", [(TINY, 32), (SMALL, 64), (R4, 64)],
                         ids=["tiny", "small", "r4"])
def test_verilator_long(cfg, bus_width, seed):
    _cocotb(cfg, bus_width, seed, tiles=600, tag="long")


def test_scenario_covers_the_cases(rng):
    """The random scenario hits m = 1, full tiles, ragged n, RAW, ReLU, both copies alone."""
    steps = scenario(rng, SMALL, tiles=60)
    drains = [s[1] for s in steps if s[0] == "drain"]
    assert any(d.m == 1 for d in drains) and any(d.n % 16 for d in drains)
    assert any(d.m == SMALL.max_m and d.n == SMALL.max_n for d in drains)
    assert any(d.raw for d in drains) and any(d.relu for d in drains)
    assert any(d.fwd and not d.filt and not d.raw for d in drains)
    assert any(d.filt and not d.fwd and not d.raw for d in drains)
    tiles = [s[1] for s in steps if s[0] == "tile"]
    assert any(not t.mant.any() for t in tiles)
    assert any(t.exp.max() >= 1015 for t in tiles) and any(
        0 < t.exp[t.mant != 0].min() <= 8 for t in tiles if (t.mant != 0).any())
    assert isinstance(tiles[0], Accumulator)
    assert np.all([len(s[2]) == s[1].shape[0] * -(-s[1].shape[1] // SMALL.rows)
                   for s in steps if s[0] == "tile"])
