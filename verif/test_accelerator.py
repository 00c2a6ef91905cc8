# amaranth: UnusedElaboratable=no
"""The accelerator top (hdl.accelerator) under Verilator against the golden job executor.

``verif/cocotb/accelerator_tb.py`` runs MLP training steps (every DRAM byte and counter
compared with :func:`golden.jobs.execute` after each job, random AXI latency and
back-pressure) and every error case followed by a good job.
"""

import pytest

from hdl.accelerator import Accelerator
from hdl.config import get_config
from verif.harness import run_cocotb


def test_parameters_validated():
    with pytest.raises(TypeError, match=r"^cfg must be an EngineConfig, not 'tiny'$"):
        Accelerator("tiny")
    with pytest.raises(ValueError, match=r"Maximum burst"):
        Accelerator(get_config("tiny"), max_burst=3)
    with pytest.raises(ValueError, match=r"Outstanding bursts"):
        Accelerator(get_config("tiny"), max_outstanding=0)
    with pytest.raises(ValueError, match=r"Drain lanes must be one of 16, 8, 4, 2, 1, not 3"):
        Accelerator(get_config("tiny"), drain_lanes=3)
    with pytest.raises(ValueError, match=r"Lanes must be one of 16, 8, 4, 2, 1, not 5"):
        Accelerator(get_config("tiny"), load_lanes=5)
    for bad in (2, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"^carry_bram_lanes must be an integer from 0 to "
                                             r"1 \(the lanes of 'tiny'\), not "):
            Accelerator(get_config("tiny"), carry_bram_lanes=bad)
    with pytest.raises(ValueError, match=r"^align_share must be a power of two from 1 to "
                                         r"rows \(4\), not 3$"):
        Accelerator(get_config("tiny"), align_share=3)


@pytest.mark.parametrize("config,sizes,batch,steps,cxx_opt", [
    # 16 x 16 tiles: K chains (CARRY/KEEP) everywhere; -O0: the build dominates
    ("tiny", "32,16,10", 16, 2, "-O0"),
    # ~8 min with the build (-O0 builds faster but the longer run then takes 14 min)
    pytest.param("small", "64,32,10", 32, 2, None, marks=pytest.mark.slow),
])
def test_system(config, sizes, batch, steps, cxx_opt, seed):
    # tiny's one lane keeps its carry queue in block RAM (as the ULX3S board top builds it;
    # carry_bram_lanes=1), so the K chains run through it under Verilator, and two PEs share
    # an align unit (align_share=2, the FPGA area option), so whole jobs run through that
    cfg = get_config(config)
    board = {"carry_bram_lanes": 1, "align_share": 2} if config == "tiny" else {}
    run_cocotb(Accelerator(cfg, **board),
               name="accelerator",
               test_module="verif.cocotb.accelerator_tb", test_id=f"accelerator-{config}",
               seed=seed, extra_env={"CONFIG": config, "SIZES": sizes, "BATCH": batch,
                                     "STEPS": steps, "PACING": 0.2},
               cxx_opt=cxx_opt)
