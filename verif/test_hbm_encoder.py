# amaranth: UnusedElaboratable=no
"""HBM v1 encoder against ``golden.hbm.encode``: Amaranth simulator and Verilator."""

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

import golden.hbm
from hdl.hbm_encoder import SUPERBLOCK, HBMEncoder
from verif.harness import run_cocotb
from verif.streams import (
    Pacer,
    beats_to_bytes,
    bfp_edge_tensor,
    bfp_tensor,
    pack_bfp_block,
    stream_get_packets,
    stream_put,
    unpack_beat,
)


@pytest.mark.parametrize("width", [0, 8, 16, 48, 128, 32.0, "64", True])
def test_bus_width_is_validated(width):
    with pytest.raises(ValueError, match=rf"^Bus width must be 32 or 64, not {width!r}$"):
        HBMEncoder(width)


@pytest.mark.parametrize("width", [32, 64])
def test_bus_width_property(width):
    dut = HBMEncoder(width)
    assert dut.bus_width == width
    Fragment.get(dut, None)  # elaborates (an unused elaboratable is a warning)


@pytest.mark.parametrize("lanes", [0, 3, 5, 32, 4.0, "4", True, None])
def test_lanes_is_validated(lanes):
    with pytest.raises(ValueError, match=rf"^Lanes must be one of 16, 8, 4, 2, 1, not {lanes!r}$"):
        HBMEncoder(64, lanes=lanes)


def test_lanes_is_keyword_only():
    with pytest.raises(TypeError):
        HBMEncoder(64, 4)


@pytest.mark.parametrize("lanes", [16, 8, 4, 2, 1])
def test_lanes_property(lanes):
    dut = HBMEncoder(32, lanes=lanes)
    assert dut.lanes == lanes
    assert HBMEncoder().lanes == 16
    Fragment.get(dut, None)


def run_encoder(tensors, bus_width, in_pacer=None, out_pacer=None, lanes=16):
    """Encode ``tensors`` (list of ``(E, m)``) in one simulation.

    Returns ``(streams, cycles)``: one bytes object per tensor and the output beat cycles.
    """
    dut = HBMEncoder(bus_width, lanes=lanes)
    cmds = [len(e) for e, _ in tensors]
    blocks = [pack_bfp_block(e, m) for t in tensors for e, m in zip(*t, strict=True)]
    result = {}

    async def put_cmd(ctx):
        await stream_put(ctx, dut.cmd, cmds)

    async def put_blocks(ctx):
        await stream_put(ctx, dut.i, blocks, in_pacer)

    async def get(ctx):
        result["out"] = await stream_get_packets(ctx, dut.o, len(tensors), out_pacer)
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put_cmd)
    sim.add_testbench(put_blocks)
    sim.add_testbench(get)
    sim.run()
    packets, cycles = result["out"]
    streams = [beats_to_bytes([unpack_beat(bus_width, w) for w in p], bus_width)
               for p in packets]
    return streams, cycles


def edge_tensors(rng):
    """Tensors that exercise the framing: empty, short superblocks, exact multiples, extremes."""
    out = [bfp_edge_tensor()]
    for n in (0, 1, 2, 15, 16, 17, 31, 32, 33):
        for s in (0.0, 0.9, 1.0):
            out.append(bfp_tensor(rng, n, s))
    out.append(bfp_tensor(rng, 100, 0.5, extremes=True))
    return out


@pytest.mark.parametrize("lanes", [16, 4, 1])
@pytest.mark.parametrize("bus_width", [32, 64])
def test_edge_tensors_byte_exact(rng, bus_width, lanes):
    tensors = edge_tensors(rng)
    got, _ = run_encoder(tensors, bus_width, lanes=lanes)
    for n, (e, m) in enumerate(tensors):
        assert got[n] == golden.hbm.encode(e, m), f"tensor {n} ({len(e)} blocks)"


@pytest.mark.parametrize("lanes", [16, 4, 1])
@pytest.mark.parametrize("bus_width", [32, 64])
def test_random_with_flow_control(rng, bus_width, lanes):
    tensors = [bfp_tensor(rng, int(rng.integers(1, 80)), s, clustered=c)
               for s in (0.0, 0.5, 0.95, 0.99) for c in (False, True)]
    got, _ = run_encoder(tensors, bus_width, Pacer(rng, 0.3), Pacer(rng, 0.4, burst=True),
                         lanes=lanes)
    for n, (e, m) in enumerate(tensors):
        assert got[n] == golden.hbm.encode(e, m), f"tensor {n} ({len(e)} blocks)"


@pytest.mark.parametrize("fixed_seed", [None, 2046344879])
def test_sparse_tensor_one_block_per_cycle(rng, fixed_seed):
    # 256 blocks at sparsity 0.99 (about 40 nonzero blocks): the input never waits, so the
    # whole tensor is done 256 cycles after its command plus the documented tail: the last
    # superblock's first beat 4 cycles after its last block, then one chunk a cycle for its
    # k nonzero blocks. (A fixed bound of 8 held only for k <= 4; seed 2046344879 ends with a
    # superblock of 7 nonzero blocks.)
    if fixed_seed is not None:
        rng = np.random.default_rng(fixed_seed)
    e, m = bfp_tensor(rng, 256, 0.99)
    got, cycles = run_encoder([(e, m)], 64)
    assert got[0] == golden.hbm.encode(e, m)
    k_last = int((np.asarray(m)[-SUPERBLOCK:] != 0).any(axis=1).sum())
    assert cycles[-1] <= 256 + 4 + max(1, k_last), (cycles[-1], k_last)


@pytest.mark.parametrize("n_blocks", [1, 16, 20])
def test_latency(rng, n_blocks):
    # cmd accepted in cycle 0, blocks in cycles 1..n; the first superblock's first beat is
    # valid 4 cycles after the superblock's last block.
    e, m = bfp_tensor(rng, n_blocks, 0.0)
    _, cycles = run_encoder([(e, m)], 64)
    assert cycles[0] == min(n_blocks, 16) + 4


def test_dense_tensor_bus_bound(rng):
    # Dense blocks are 19 bytes: the 64-bit bus must be busy every cycle once it started.
    e, m = bfp_tensor(rng, 64, 0.0)
    got, cycles = run_encoder([(e, m)], 64)
    stream = golden.hbm.encode(e, m)
    assert got[0] == stream
    beats = -(-len(stream) // 8)
    assert cycles[-1] - cycles[0] == beats - 1


@pytest.mark.parametrize("lanes", [8, 4, 2, 1])
@pytest.mark.parametrize("bus_width", [32, 64])
def test_narrow_dense_one_record_per_period(rng, bus_width, lanes):
    # With fewer lanes a record takes 16 / lanes output cycles: a dense tensor (19-byte
    # records) keeps the bus busy when that is more than the bus can carry, else it takes
    # 16 / lanes cycles a block.
    n, period = 48, 16 // lanes
    e, m = bfp_tensor(rng, n, 0.0)
    got, cycles = run_encoder([(e, m)], bus_width, lanes=lanes)
    stream = golden.hbm.encode(e, m)
    assert got[0] == stream
    beats = -(-len(stream) // (bus_width // 8))
    assert cycles[-1] <= max(beats, n * period) + 16 + 8


@pytest.mark.parametrize("lanes", [8, 2])
def test_random_other_lanes(rng, lanes):
    tensors = [bfp_tensor(rng, int(rng.integers(1, 60)), s, clustered=c)
               for s in (0.0, 0.9, 0.99) for c in (False, True)]
    got, _ = run_encoder(tensors, 64, Pacer(rng, 0.3), Pacer(rng, 0.4, burst=True),
                         lanes=lanes)
    for n, (e, m) in enumerate(tensors):
        assert got[n] == golden.hbm.encode(e, m), f"tensor {n} ({len(e)} blocks)"


@pytest.mark.parametrize("lanes", [4, 1])
def test_narrow_latency(rng, lanes):
    # A 1-block tensor: its L1 mask, header and group 0 go in one chunk, one more chunk per
    # further group; the single (partial) beat leaves 3 cycles after the record's last chunk.
    e, m = bfp_tensor(rng, 1, 0.0)
    got, cycles = run_encoder([(e, m)], 64, lanes=lanes)
    assert got[0] == golden.hbm.encode(e, m)
    assert cycles[-1] == 1 + 2 + 16 // lanes + 1


@pytest.mark.cocotb
@pytest.mark.parametrize("bus_width", [32, 64])
def test_verilator(seed, bus_width):
    run_cocotb(HBMEncoder(bus_width), name=f"hbm_encoder_{bus_width}",
               test_module="verif.cocotb.hbm_encoder_tb", test_id=f"hbm_encoder_{bus_width}",
               seed=seed, extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 3000})


# 792851721: a seed on which a narrow encoder that sent a tensor's last full beat without
# `last` (its final record's last groups empty, the buffer already drained: an extra empty
# beat followed) failed; the Amaranth benches never drain the output at full rate, this one
# does (the fault showed on 7 of 15 random seeds).
@pytest.mark.cocotb
@pytest.mark.parametrize("fixed_seed", [None, 792851721], ids=["random", "regression"])
def test_verilator_lanes4(seed, fixed_seed):
    tag = "" if fixed_seed is None else "_regression"
    run_cocotb(HBMEncoder(64, lanes=4), name="hbm_encoder_64_l4",
               test_module="verif.cocotb.hbm_encoder_tb", test_id=f"hbm_encoder_64_l4{tag}",
               seed=seed if fixed_seed is None else fixed_seed,
               extra_env={"BUS_WIDTH": 64, "BLOCKS": 1500})


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("bus_width", [32, 64])
def test_verilator_long(seed, bus_width):
    run_cocotb(HBMEncoder(bus_width), name=f"hbm_encoder_{bus_width}",
               test_module="verif.cocotb.hbm_encoder_tb",
               test_id=f"hbm_encoder_{bus_width}_long", seed=seed,
               extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 20000})
