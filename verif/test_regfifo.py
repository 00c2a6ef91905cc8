# amaranth: UnusedElaboratable=no
"""RegFIFO and BlockRAMQueue against a Python deque: random writes and reads, full and empty."""

from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from hdl.regfifo import BlockRAMQueue, RegFIFO


def _against_a_deque(dut, depth, cycles, choose):
    """Drive ``dut`` for ``cycles`` cycles; ``choose(cycle, model)`` gives ``(w_en, r_en,
    word, check_head)`` (``model``: a deque of ``(word, cycle written)``). The flags and level
    are checked every cycle, the head when ``check_head``. Returns the errors and the number
    of head checks."""
    errors = []
    checked = [0]

    async def tb(ctx):
        model = deque()
        for cycle in range(cycles):
            w_en, r_en, word, check_head = choose(cycle, model)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, word)
            ctx.set(dut.r_en, r_en)
            await ctx.delay(1e-9)
            state = (ctx.get(dut.w_rdy), ctx.get(dut.r_rdy), ctx.get(dut.level))
            want = (int(len(model) < depth), int(len(model) > 0), len(model))
            if state != want:
                errors.append((cycle, "flags", state, want))
            if check_head:
                checked[0] += 1
                if ctx.get(dut.r_data) != model[0][0]:
                    errors.append((cycle, "head", ctx.get(dut.r_data), model[0][0]))
            write = w_en and len(model) < depth
            if r_en and model:
                model.popleft()
            if write:
                model.append((word, cycle))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return errors, checked[0]


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 8])
def test_regfifo_matches_a_queue(depth):
    rng = np.random.default_rng(depth)

    def choose(cycle, model):
        return (bool(rng.random() < 0.6), bool(rng.random() < 0.5),
                int(rng.integers(0, 1 << 12)), bool(model))

    errors, checked = _against_a_deque(RegFIFO(width=12, depth=depth), depth, 600, choose)
    assert errors == [] and checked > 200


@pytest.mark.parametrize("kw", [{"width": 0, "depth": 2}, {"width": 8, "depth": 0},
                                {"width": 8, "depth": 9}, {"width": 8, "depth": 2.0}])
def test_regfifo_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        RegFIFO(**kw)


@pytest.mark.parametrize("depth", [2, 3, 10, 16])
def test_block_ram_queue_matches_a_queue(depth):
    # the queue's contract: an entry is read (and its data checked) only from the second
    # cycle after the one it was written in; reads come back to back, also right after a read
    rng = np.random.default_rng(100 + depth)

    def choose(cycle, model):
        burst = cycle % 200 < 100  # phases that fill the queue and that drain it
        ripe = bool(model) and model[0][1] <= cycle - 2
        return (bool(rng.random() < (0.7 if burst else 0.3)),
                ripe and bool(rng.random() < (0.3 if burst else 0.9)),
                int(rng.integers(0, 1 << 40)), ripe)

    errors, checked = _against_a_deque(BlockRAMQueue(width=40, depth=depth), depth, 1500,
                                       choose)
    assert errors == [] and checked > 500


@pytest.mark.parametrize("kw", [{"width": 0, "depth": 2}, {"width": 8, "depth": 1},
                                {"width": 8, "depth": 2.0}])
def test_block_ram_queue_rejects_bad_parameters(kw):
    with pytest.raises(ValueError, match="must be"):
        BlockRAMQueue(**kw)
