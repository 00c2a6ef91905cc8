"""cocotb cycle benchmark of the GEMM engine (driven by ``verif/bench_engine.py``).

For each phase and each sparsity in ``SPARSITIES``, a tile ``M x N x K`` (env ``TILE``) with
unstructured random zeros is loaded and run; the engine's own ``cycles`` counter (command to
last output beat) is recorded with the lane counters, and the outputs are checked against
golden.gemm. Records go to the JSON file named by ``BENCH_OUT``.

* FP: A = X (M x K) at sparsity s, B = W (N x K) dense;
* BP: A = dY at sparsity s, B = W^T dense, a random ReLU-derivative output mask (half ones);
* WG: A = dY^T (M x K), B = X^T (N x K), both blocked along the samples and both at
  sparsity s; plus ``wg_a``: only A sparse (B dense), the one-operand reference.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np

from golden.bfp import BFPTensor
from verif.cocotb.engine_tb import TB, _cfg, _rng
from verif.engine_model import expected_beats, random_operand


def operand(rng, rows, k, s):
    """Random operand at sparsity ``s``; at ``s = 0`` truly dense (no zero mantissa at all)."""
    t = random_operand(rng, rows, k, s)
    if s == 0.0:
        t = BFPTensor(t.exponents, np.where(t.mantissas == 0, 1, t.mantissas).astype(np.int8))
    return t


def _lane_macs(dut, lanes):
    v = dut.lane_macs.value.to_unsigned()
    return [(v >> (32 * i)) & 0xFFFFFFFF for i in range(lanes)]


@cocotb.test()
async def sweep(dut):
    cfg, rng = _cfg(), _rng()
    m, n, k = (int(x) for x in os.environ["TILE"].split("x"))
    sparsities = [float(s) for s in os.environ["SPARSITIES"].split(",")]
    tb = TB(dut, cfg, rng)
    await tb.reset()
    records = []
    t0 = time.monotonic()

    async def measure(phase, s_a, s_b, a, b, mask, load_b):
        await tb.send("cmd", [tb.pk.command("CLEAR_A")] + (
            [tb.pk.command("CLEAR_B")] if load_b else []))
        await tb.load(a, b if load_b else None, mask, clear=False)
        beats = await tb.run(a.shape[0], b.shape[0], mask is not None)
        status = await tb.status()
        assert status.name == "OK", status
        want = expected_beats(cfg, a, b, mask)
        got = {(r, g): (mm, ee) for r, g, mm, ee in beats}
        assert got == want, f"{phase} s={s_a}: outputs differ from golden.gemm"
        lanes = _lane_macs(dut, cfg.lanes)
        rec = {
            "phase": phase, "sparsity": s_a, "sparsity_b": s_b,
            "m": a.shape[0], "n": b.shape[0], "k": a.shape[1],
            "cycles": dut.cycles.value.to_unsigned(),
            "mac_cycles": dut.mac_cycles.value.to_unsigned(),
            "lane_mac_cycles": lanes,
            "macs_dense": a.shape[0] * b.shape[0] * a.shape[1],
            "macs_nonzero_a": int(np.count_nonzero(a.mantissas)) * b.shape[0],
            "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
            "config": cfg.name,
        }
        records.append(rec)
        dut._log.info("%-4s s=%.2f sB=%.2f cycles=%d (%.0f s)", phase, s_a, s_b,
                      rec["cycles"], time.monotonic() - t0)

    for phase in ("fp", "bp"):
        w = operand(rng, n, k, 0.0)
        mask = rng.random((m, n)) < 0.5 if phase == "bp" else None
        for i, s in enumerate(sparsities):
            a = operand(rng, m, k, s)
            await measure(phase, s, 0.0, a, w, mask, load_b=(i == 0))
    # WG operands are drawn directly in their re-blocked orientation (Co x S and K x S,
    # blocked along the S samples): re-quantizing random blocks with independent exponents
    # would flush most values and change the sparsity under test
    for s in sparsities:
        await measure("wg", s, s, operand(rng, m, k, s), operand(rng, n, k, s),
                      None, load_b=True)
    x = operand(rng, n, k, 0.0)
    for s in sparsities:
        await measure("wg_a", s, 0.0, operand(rng, m, k, s), x, None,
                      load_b=(s == sparsities[0]))
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(records, f, indent=1)
