"""cocotb bench of the accelerator top (hdl.accelerator) against the golden job executor.

Environment: ``CONFIG`` (engine configuration name), ``SIZES`` (MLP layer sizes, comma
separated), ``BATCH``, ``STEPS``, ``PACING`` (probability of a stall on each AXI channel of
the memory), ``SEED``.

* ``test_mlp_steps``: ``STEPS`` training steps of an MLP (FP job, host loss gradient, BP job
  with WG; the host's SGD update and threshold controllers between steps, as
  ``runtime.driver.train_step`` does): after every job the RTL's DRAM image equals the
  golden model's byte for byte and the counters agree (:class:`verif.cocotb.system.System`).
* ``test_mlp_steps_update``: the same with the weight update on the chip (``Flag.UPDATE``).
* ``test_errors``: every error case of ``docs/system.md`` ("Errors"), each followed by a
  successful job.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from golden import nn, sparsity
from golden.jobs import ErrorCode
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Flag, Op, pack, unpack
from runtime.image import MLPStep
from verif.cocotb.system import System

CFG = get_config(os.environ.get("CONFIG", "tiny"))
SIZES = tuple(int(v) for v in os.environ.get("SIZES", "32,16,10").split(","))
BATCH = int(os.environ.get("BATCH", "16"))
STEPS = int(os.environ.get("STEPS", "2"))
PACING = float(os.environ.get("PACING", "0.2"))
SEED = int(os.environ.get("SEED", "1"))
SPARE = 0x4000  #: DRAM after the step's image, for the error tests' descriptors


async def mlp_step(sys, step, weights, x, labels, thresholds, hyper=None):
    """One training step on both models; returns ``(loss, correct, grads, stats)`` (``grads``
    None with the on-chip update: then ``weights`` is None and ``hyper`` the update's)."""
    writes = [] if step.update else step.weight_writes(weights)
    await sys.load(writes + step.input_writes(x) + step.descriptor_writes(thresholds, hyper))
    fp, bp = step.jobs["fp"], step.jobs["bp"]
    st = await sys.run_both("fp", fp.desc_base, fp.count)
    assert st.ok, st
    logits = (await sys.rtl.read_tensor(step.tensors["logits"])).value()
    loss, g, correct = nn.softmax_cross_entropy(logits, labels)
    await sys.load(step.loss_grad_writes(g))
    st = await sys.run_both("bp", bp.desc_base, bp.count)
    assert st.ok, st
    grads = None if step.update else [
        (await sys.rtl.read_tensor(step.tensors[f"dw{layer}"])).value().astype(np.float32)
        for layer in range(step.layers)]
    records = {job: await sys.rtl.read_stats(step.stats_regions(job)) for job in ("fp", "bp")}
    return loss, correct, grads, step.filter_stats(records)


def make_layers(sizes, rng):
    return [(rng.standard_normal((co, k)) * np.sqrt(2.0 / k)).astype(np.float32)
            for k, co in zip(sizes[:-1], sizes[1:], strict=True)]


class Host:
    """The host's side of training: master weights, SGD, threshold controllers."""

    def __init__(self, step, rng, target=0.9, lr=0.05):
        self.step = step
        self.rng = rng
        self.weights = make_layers(step.sizes, rng)
        self.layers = [nn.Linear(k, co) for k, co in zip(step.sizes[:-1], step.sizes[1:],
                                                          strict=True)]
        for layer, w in zip(self.layers, self.weights, strict=True):
            layer.w = w
        self.opt = nn.SGD(self.layers, lr, 0.9, 5e-4)
        self.ctrl = {(i, k): sparsity.ThresholdController(target)
                     for i in range(step.layers - 1) for k in ("act", "err")}

    def thresholds(self):
        return {key: (c.threshold, c.base) for key, c in self.ctrl.items()}

    def update(self, grads, stats):
        for layer, g in zip(self.layers, grads, strict=True):
            layer.grad = g
        self.opt.step()
        for key, c in self.ctrl.items():
            c.update(stats[key])

    def weights_now(self):
        return [layer.w for layer in self.layers]


@cocotb.test()
async def test_mlp_steps(dut):
    rng = np.random.default_rng(SEED)
    step = MLPStep(SIZES, BATCH, CFG, error_copies=True)
    sys = System(dut, CFG, step.dram_size, SEED)
    await sys.start()
    sys.set_pacing(PACING)
    host = Host(step, rng)
    filtered = False
    for s in range(STEPS):
        x = rng.random((BATCH, SIZES[0])).astype(np.float32)
        labels = rng.integers(0, SIZES[-1], BATCH)
        loss, correct, grads, stats = await mlp_step(sys, step, host.weights_now(), x, labels,
                                                     host.thresholds())
        assert np.isfinite(loss)
        filtered |= any(st.filtered_zeros > st.zeros for st in stats.values())
        host.update(grads, stats)
        dut._log.info(f"step {s}: loss {loss:.4f}, {correct}/{BATCH} correct")
    if STEPS > 1:
        assert filtered, "the controllers never set a threshold that filtered something"
    for name, st, cycles, _ns in sys.jobs:
        dut._log.info(f"job {name}: {st.completed} descriptors, {cycles} cycles")


@cocotb.test()
async def test_mlp_steps_update(dut):
    """The same with the weight update on the chip (MLPStep(update=True)): state, W and W^T
    rewritten by the WG tiles, compared byte for byte after every job."""
    rng = np.random.default_rng(SEED + 2)
    step = MLPStep(SIZES, BATCH, CFG, update=True)
    sys = System(dut, CFG, step.dram_size, SEED)
    await sys.start()
    sys.set_pacing(PACING)
    host = Host(step, rng)
    await sys.load(step.state_writes(host.weights_now()))
    for s in range(STEPS):
        x = rng.random((BATCH, SIZES[0])).astype(np.float32)
        labels = rng.integers(0, SIZES[-1], BATCH)
        loss, correct, _, stats = await mlp_step(sys, step, None, x, labels, host.thresholds(),
                                                 (0.05, 0.9, 5e-4))
        for key, c in host.ctrl.items():
            c.update(stats[key])
        dut._log.info(f"step {s} (on-chip update): loss {loss:.4f}, {correct}/{BATCH} correct")


def _descs(blob):
    return [unpack(blob[i:i + DESC_BYTES]) for i in range(0, len(blob), DESC_BYTES)]


def _blob(descs):
    return b"".join(pack(**{k: v for k, v in d.items()}) for d in descs)


@cocotb.test()
async def test_errors(dut):
    """Every error case, each followed by the good job (module docstring)."""
    rng = np.random.default_rng(SEED + 1)
    step = MLPStep(SIZES, BATCH, CFG)
    size = step.dram_size + SPARE
    sys = System(dut, CFG, size, SEED)
    await sys.start()
    sys.set_pacing(PACING)
    weights = make_layers(SIZES, rng)
    x = rng.random((BATCH, SIZES[0])).astype(np.float32)
    await sys.load(step.weight_writes(weights) + step.input_writes(x)
                   + step.descriptor_writes())
    fp = step.jobs["fp"]
    good = _descs(bytes(sys.gold_tr.dram[fp.desc_base:fp.desc_base + fp.count * DESC_BYTES]))
    assert len(good) >= 2
    spare = step.dram_size  # error jobs' descriptors go here
    # index of the first descriptor that writes output (the end of the first chain)
    first_out = next(i for i, d in enumerate(good) if not d["flags"] & Flag.KEEP)
    assert first_out + 1 < len(good)

    async def good_job(label):
        st = await sys.run_both(f"{label}: good job", fp.desc_base, fp.count)
        assert st.ok, (label, st)

    async def case(label, descs, code, index, *, compare_dram=True, cleanup=None):
        await sys.load([(spare, _blob(descs))])
        st = await sys.run_both(label, spare, len(descs), compare_dram=compare_dram)
        assert (st.code, st.index) == (code, index), (label, st)
        status = await sys.rtl.read_reg("status")
        assert status["error"] and not status["busy"] and not status["done"], (label, status)
        if cleanup is not None:
            cleanup()
        await good_job(label)

    def edit(i, **fields):
        descs = [dict(d) for d in good]
        descs[i].update(fields)
        return descs

    await good_job("first")
    j = first_out + 1  # a descriptor after one that wrote output
    d = good[j]
    # op, reserved fields, phase, flags
    await case("unknown op", edit(j, op=3), ErrorCode.BAD_OP, j)
    await case("reserved field", edit(j, reserved1=1), ErrorCode.BAD_OP, j)
    await case("unknown phase", edit(j, phase=3), ErrorCode.BAD_OP, j)
    await case("undefined flag", edit(j, flags=d["flags"] | 1 << 9), ErrorCode.BAD_OP, j)
    await case("update", edit(j, op=Op.UPDATE), ErrorCode.UNSUPPORTED, j)
    await case("UPDATE with RELU/KEEP", edit(j, flags=d["flags"] | Flag.UPDATE | Flag.RELU),
               ErrorCode.BAD_OP, j)
    upd = dict(flags=Flag.UPDATE, mask_addr=spare + 0x1000, mask_len=d["m"] * d["n"] * 8 - 8)
    await case("UPDATE state length", edit(j, **upd), ErrorCode.BAD_ADDRESS, j)
    # shapes
    await case("m = 0", edit(j, m=0), ErrorCode.BAD_SHAPE, j)
    await case("n too large", edit(j, n=CFG.max_n + 1), ErrorCode.BAD_SHAPE, j)
    await case("kblocks too large", edit(j, kblocks=CFG.max_k // 16 + 1), ErrorCode.BAD_SHAPE, j)
    # chains
    await case("carry without keep", edit(0, flags=good[0]["flags"] | Flag.CARRY),
               ErrorCode.BAD_CHAIN, 0)
    await case("dangling keep", [dict(good[0], flags=good[0]["flags"] | Flag.KEEP)],
               ErrorCode.BAD_CHAIN, 0)
    # outputs
    await case("no output", edit(first_out, out_cap=0, filt_cap=0, flags=good[first_out]["flags"]
                                 & ~Flag.RAW), ErrorCode.NO_OUTPUT, first_out)
    # addresses
    await case("misaligned A", edit(j, a_addr=d["a_addr"] + 4), ErrorCode.BAD_ADDRESS, j)
    await case("empty B budget", edit(j, b_len=0), ErrorCode.BAD_ADDRESS, j)
    await case("output beyond DRAM", edit(first_out, out_addr=size - 8, out_cap=16),
               ErrorCode.BAD_ADDRESS, first_out)
    await case("capacity not whole beats",
               edit(first_out, out_cap=good[first_out]["out_cap"] - 4), ErrorCode.BAD_ADDRESS,
               first_out)
    await case("statistics beyond DRAM", edit(j, stats_addr=size - 64), ErrorCode.BAD_ADDRESS, j)
    await sys.load([(spare, _blob(good))])
    st = await sys.run_both("descriptor beyond DRAM", size - DESC_BYTES, 2)
    assert (st.code, st.index) == (ErrorCode.BAD_ADDRESS, 1), st
    await good_job("descriptor beyond DRAM")
    # overflow: a capacity of one beat
    await case("overflow", edit(first_out, out_cap=8), ErrorCode.OVERFLOW, first_out)
    # corrupt stream: the first mantissa byte of the input's first tile becomes 0 (the input
    # is positive: its first block has a nonzero, so byte 5 is a mantissa, after the L1
    # mask, the block's L2 mask and its exponent)
    a = step.tensors["x"].regions[(0, 0)][0]
    saved = bytes(sys.gold_tr.dram[a:a + 8])
    sys.poke(a + 5, b"\x00")
    await case("corrupt A stream", good, ErrorCode.BAD_STREAM, _first_reading(good, a),
               cleanup=lambda: sys.poke(a, saved))
    # bus errors: descriptor fetch, operand read, output write
    def no_faults():
        sys.set_faults([])

    sys.set_faults([(spare + j * DESC_BYTES, spare + j * DESC_BYTES + 8)])
    await case("bus error on a descriptor", good, ErrorCode.BUS_ERROR, j, cleanup=no_faults)
    sys.set_faults([(a, a + 8)])
    await case("bus error reading A", good, ErrorCode.BUS_ERROR, _first_reading(good, a),
               cleanup=no_faults)
    o = good[first_out]["out_addr"]
    sys.set_faults([(o, o + 8)])
    await case("bus error writing", good, ErrorCode.BUS_ERROR, first_out, compare_dram=False,
               cleanup=no_faults)
    # a start while busy is ignored and flagged
    await sys.rtl.write_reg("status", done=1, error=1, overrun=1)
    await sys.rtl.write_reg("desc_base", addr=fp.desc_base)
    await sys.rtl.write_reg("desc_count", count=fp.count)
    await sys.rtl.write_reg("ctrl", start=1)
    await ClockCycles(dut.clk, 5)
    await sys.rtl.write_reg("ctrl", start=1)
    status = await sys.rtl.read_reg("status")
    assert status["busy"] and status["overrun"], status
    await sys.wait_idle()
    status = await sys.rtl.read_reg("status")
    assert status["done"] and not status["error"], status
    await good_job("after overrun")


def _first_reading(descs, addr):
    """Index of the first descriptor that reads the stream at ``addr``."""
    for i, d in enumerate(descs):
        if addr in (d["a_addr"], d["b_addr"]) or (d["flags"] & Flag.MASK
                                                  and d["mask_addr"] == addr):
            return i
    raise AssertionError(f"no descriptor reads {addr:#x}")
