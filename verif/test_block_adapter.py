# amaranth: UnusedElaboratable=no
"""Block and mask adapters (hdl.block_adapter) in the Amaranth simulator against a Python model.

Stimulus: random canonical BFP8 tensors over sparsity 0..1 (clustered and not), as the HBM
decoder would deliver them; random bubbles on the input and back-pressure on the output.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.block_adapter import BlockAdapter, MaskAdapter, mask_word_layout
from hdl.engine_load import beat_layout
from verif.streams import Pacer, bfp_tensor, pack_bfp_block, stream_through


def model_block_stream(exp, mant, kblocks):
    """The engine block stream of a row-major tensor: dicts, in order."""
    out = []
    for b, (e, m) in enumerate(zip(exp, mant, strict=True)):
        nz = [k for k in range(16) if m[k] != 0]
        if not nz:
            continue
        mask = sum(1 << k for k in nz)
        out.append({"hdr": 1, "row": b // kblocks, "kb": b % kblocks, "mask": mask,
                    "exp": int(e)})
        out += [{"hdr": 0, "mant": int(m[k])} for k in nz]
    return out


def model_mask_words(mant, kblocks, rows):
    out = []
    per = 16 // rows
    for b, m in enumerate(mant):
        for j in range(per):
            bits = sum(1 << r for r in range(rows) if m[j * rows + r] != 0)
            out.append({"row": b // kblocks, "grp": (b % kblocks) * per + j, "bits": bits})
    return out


def _run(dut, blocks, kblocks, count, rng, bubbles, stall):
    """Feed ``blocks`` and take ``count`` output words in one loop; ``(words, cycles)``."""
    got = {}

    async def tb(ctx):
        ctx.set(dut.kblocks, kblocks)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        words = [pack_bfp_block(e, m) for e, m in blocks]
        out, cycles, _ = await stream_through(ctx, dut.i, dut.o, words, count,
                                              Pacer(rng, bubbles), Pacer(rng, stall))
        for _ in range(20):  # nothing more may come out
            ctx.set(dut.o.ready, 1)
            _, _, o_valid = await ctx.tick().sample(dut.o.valid)
            assert not o_valid, "extra output word"
        got["words"], got["cycles"] = out, cycles

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got["words"], got["cycles"]


@pytest.mark.parametrize("sparsity,clustered", [(0.0, False), (0.5, False), (0.9, True),
                                                (0.99, False), (1.0, False)])
@pytest.mark.parametrize("pacing", [(0.0, 0.0), (0.3, 0.4)])
def test_block_adapter(sparsity, clustered, pacing, rng):
    kblocks, rows = 3, 7
    exp, mant = bfp_tensor(rng, kblocks * rows, sparsity, clustered)
    want = model_block_stream(exp, mant, kblocks)
    dut = BlockAdapter(row_w=4, kb_w=2)
    words, cycles = _run(dut, list(zip(exp, mant, strict=True)), kblocks, len(want), rng,
                         *pacing)
    layout = beat_layout(4, 2)
    got = []
    for w in words:
        c = layout.from_bits(w)
        if c.hdr:
            got.append({"hdr": 1, "row": int(c.row), "kb": int(c.kb), "mask": int(c.mask),
                        "exp": int(c.exp)})
        else:
            got.append({"hdr": 0, "mant": int(c.mant)})
    assert got == want
    if pacing == (0.0, 0.0) and want:
        # Throughput: one beat per cycle, plus one cycle per zero block between the first
        # and the last nonzero block (a zero block is consumed in a cycle of its own).
        live = np.flatnonzero(np.any(mant != 0, axis=1))
        zeros_between = (live[-1] - live[0] + 1) - len(live)
        assert cycles[-1] - cycles[0] == len(want) - 1 + zeros_between


@pytest.mark.parametrize("rows", [4, 16])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 1.0])
def test_mask_adapter(rows, sparsity, rng):
    kblocks, nrows = 2, 5
    exp, mant = bfp_tensor(rng, kblocks * nrows, sparsity)
    want = model_mask_words(mant, kblocks, rows)
    grp_w = 3
    dut = MaskAdapter(row_w=3, grp_w=grp_w, rows=rows)
    words, _ = _run(dut, list(zip(exp, mant, strict=True)), kblocks, len(want), rng, 0.3, 0.3)
    layout = mask_word_layout(3, grp_w, rows)
    got = [{"row": int(c.row), "grp": int(c.grp), "bits": int(c.bits)}
           for c in map(layout.from_bits, words)]
    assert got == want


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Row width must be an integer from 1 to 16, not 0$"):
        BlockAdapter(0, 2)
    with pytest.raises(ValueError, match=r"^Rows must be 1, 2, 4, 8 or 16, not 3$"):
        MaskAdapter(3, 3, 3)
