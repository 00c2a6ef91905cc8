"""cocotb bench: CNN training-step jobs (runtime.cnn) on the accelerator top against the
golden job executor.

Environment: ``CONFIG``, ``BATCH``, ``JOBS`` (how many jobs of :attr:`CNNStep.job_order` to
run, all by default), ``UPDATE`` (1: the weight update on the chip, ``CNNStep(update=True)``),
``PACING``, ``SEED``. The host's work between the jobs is
:func:`runtime.cnn.cnn_train_step`'s; every job runs on both models and
:meth:`verif.cocotb.system.System.run_both` checks after each that the DRAM images (every
tensor, every statistics record) and the counters agree byte for byte.
"""

import os

import cocotb
import numpy as np

from golden import data, sparsity, train
from hdl.config import get_config
from runtime.cnn import CNNStep, cnn_train_step
from verif.cocotb.system import System

CFG = get_config(os.environ.get("CONFIG", "tiny"))
BATCH = int(os.environ.get("BATCH", "16"))
JOBS = int(os.environ.get("JOBS", "0"))
PACING = float(os.environ.get("PACING", "0.2"))
SEED = int(os.environ.get("SEED", "1"))
UPDATE = os.environ.get("UPDATE", "0") == "1"
HYPER = (0.05, 0.9, 5e-4)  # lr, momentum, weight decay


class _Stop(Exception):
    pass


class _Both:
    """The driver interface cnn_train_step uses, over both models of a System."""

    def __init__(self, sys, limit):
        self.sys, self.limit, self.done = sys, limit, 0

    async def load(self, writes):
        await self.sys.load(writes)

    async def run(self, job, check=True):
        if self.limit and self.done == self.limit:
            raise _Stop
        st = await self.sys.run_both(job.name, job.desc_base, job.count)
        assert st.ok, st
        self.done += 1
        return st

    async def read_tensor(self, tensor):
        return await self.sys.rtl.read_tensor(tensor)

    async def read_stats(self, regions):
        return await self.sys.rtl.read_stats(regions)


@cocotb.test()
async def test_cnn_step(dut):
    rng = np.random.default_rng(SEED)
    model = train.build_model("cnn", (8, 8), 10)
    model.init(rng)
    step = CNNStep(train.build_model("cnn", (8, 8), 10), BATCH, CFG, update=UPDATE)
    sys = System(dut, CFG, step.dram_size, SEED)
    await sys.start()
    sys.set_pacing(PACING)
    weights = [layer.w for layer in model.gemm_layers]
    if UPDATE:  # masters, velocities, W and W^T live on the chip from here on
        await sys.load(step.state_writes(weights))
        weights = None
    ds = data.load_digits()
    idx = rng.choice(len(ds.y_train), BATCH, replace=False)
    # nonzero thresholds, so the filter drops values in every filtered tensor
    thr = {key: sparsity.Threshold(120, 64) for key in ((0, "act"), (1, "act"), (0, "err"),
                                                       (1, "err"))}
    both = _Both(sys, JOBS)
    try:
        res = await cnn_train_step(both, step, weights, ds.x_train[idx], ds.y_train[idx], thr,
                                   hyper=HYPER if UPDATE else None)
        assert np.isfinite(res.loss)
    except _Stop:
        pass
    for name, st, cycles, _ns in sys.jobs:
        dut._log.info(f"{name}: {st.completed} descriptors, {cycles} cycles")
    assert len(sys.jobs) == (JOBS or len(step.job_order))
