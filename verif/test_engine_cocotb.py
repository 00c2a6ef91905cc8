"""The GEMM engine under Verilator (cocotb): all phases, edge cases and errors vs golden.gemm.

One Verilator build per configuration; each simulation runs many tiles (``verif/cocotb/
engine_tb.py``). The fast suite uses small configurations (``tiny``, and ``mid``: R=8, L=3
with non-power-of-two sizes and buffers smaller than a dense tile); the ``small`` and
``default`` configurations and the long random runs are marked slow.
"""

import dataclasses
import json

import pytest

from hdl.config import EngineConfig, get_config
from hdl.engine import Engine
from verif.harness import run_cocotb

MID = EngineConfig("mid", rows=8, lanes=3, max_m=12, max_n=24, max_k=64, a_nz_depth=512,
                   a_hdr_depth=40)


def _run(cfg: EngineConfig, seed: int, cases: int, tag: str | None, testcase=None):
    # tag None: the build directory shared with `make bench` (one Verilator build per config)
    run_cocotb(Engine(cfg), name=f"engine_{cfg.name}",
               test_module="verif.cocotb.engine_tb",
               test_id=f"engine_{cfg.name}" + (f"_{tag}" if tag else ""), seed=seed,
               testcase=testcase,
               extra_env={"CFG": json.dumps(dataclasses.asdict(cfg)), "CASES": cases})


@pytest.mark.cocotb
@pytest.mark.parametrize("cfg", [get_config("tiny"), MID], ids=lambda c: c.name)
def test_engine_verilator(cfg, seed):
    _run(cfg, seed, cases=25, tag="fast")


@pytest.mark.slow
@pytest.mark.cocotb
@pytest.mark.parametrize("name, cases", [("small", 40), ("default", 25)])
def test_engine_verilator_large(name, cases, seed):
    _run(get_config(name), seed, cases=cases, tag=None)


@pytest.mark.slow
@pytest.mark.cocotb
def test_engine_verilator_long_random(seed):
    _run(get_config("tiny"), seed, cases=400, tag="long", testcase="random_tiles")
