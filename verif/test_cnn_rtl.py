"""CNN training-step jobs (runtime.cnn: the conv RAW pass, the masked CARRY selection pass
with RELU and FILTER, host im2col and pooling routing between jobs) on the accelerator top
under Verilator, every DRAM byte and counter equal to the golden job executor after each job
(verif/cocotb/cnn_tb.py)."""

import pytest

from hdl.accelerator import Accelerator
from hdl.config import get_config
from verif.harness import run_cocotb


# jobs: the first jobs of CNNStep.job_order to run (0: the whole step). fp0 + sel0 (the conv
# RAW pass and the selection pass) on tiny take ~4 minutes with the build; the whole step on
# default (110 descriptors) ~11 minutes with the -O0 build; with the update on the chip
# (update=1: 360 descriptors, 16-wide tiles) 17.5 minutes (-O0, measured on the busy 2-core
# machine; the -Os build of this top took over 25 minutes there and was not worth it).
@pytest.mark.slow
@pytest.mark.timeout(2700)
@pytest.mark.parametrize("config,jobs,update,cxx_opt", [("tiny", 2, 0, None),
                                                        ("default", 0, 0, "-O0"),
                                                        ("default", 0, 1, "-O0")])
def test_cnn_jobs_on_rtl(config, jobs, update, cxx_opt, seed):
    run_cocotb(Accelerator(get_config(config)), name="accelerator",
               test_module="verif.cocotb.cnn_tb",
               test_id=f"accelerator-cnn-{config}" + ("-update" if update else ""),
               seed=seed, extra_env={"CONFIG": config, "BATCH": 16, "JOBS": jobs,
                                     "UPDATE": update,
                                     "PACING": 0.1 if config == "default" else 0.2},
               cxx_opt=cxx_opt)
