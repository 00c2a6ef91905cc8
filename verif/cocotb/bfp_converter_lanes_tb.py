"""cocotb bench for hdl.bfp_converter.BFPConverter built with ``lanes < 16``.

Reuses the scoreboard of :mod:`verif.cocotb.bfp_converter_tb` (edge cases and random blocks
against the golden model, input bubbles x output back-pressure); the full-rate timing check
takes the converter's numbers from the environment: ``INTERVAL`` (cycles per block) and
``LATENCY``.
"""

import os

import cocotb
import numpy as np

from verif.cocotb.bfp_converter_tb import SEED, check

INTERVAL = int(os.environ["INTERVAL"])
LATENCY = int(os.environ["LATENCY"])


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Golden match under each combination of input bubbles and output back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    src, sink = await check(dut, rng, idle, stall)
    if idle == 0 and stall == 0:
        assert sink.cycles[0] - src.sent[0] == LATENCY
        assert np.all(np.diff(sink.cycles) == INTERVAL)
