"""``make sim``: digits-MLP training steps on the RTL top (FP, BP, WG and the fixed-point weight
update, all on the chip), every job checked against the golden executor; the raw results go to
``$OUT`` (JSON) for :mod:`verif.sim` to summarize.

Environment: ``CONFIG``, ``STEPS``, ``SEED``, ``OUT``.
"""

import json
import os
import time

import cocotb
import numpy as np

from golden import data, nn, sparsity, train
from golden.jobs import RAW_RECORD_BYTES
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Flag, unpack
from runtime.image import MLPStep
from verif.cocotb.system import System

CONFIG = os.environ.get("CONFIG", "default")
STEPS = int(os.environ.get("STEPS", "1"))
SEED = int(os.environ.get("SEED", "0"))
OUT = os.environ["OUT"]
SIZES, BATCH = (64, 128, 64, 10), 32
CLOCK_NS = 10  # verif.cocotb.stream_bfm.start_clock
WRITES = {"fp": ("y", "s", "logits"), "bp": ("e", "st", "w", "wt")}  # tensors each job writes
HYPER = (0.05, 0.9, 5e-4)  # lr, momentum, weight decay (golden.train's defaults)


def fp16_bytes(blob):
    """DRAM bytes of a job's descriptors with dense FP16 tensors (FP32 for RAW outputs and
    for the master weights and momenta of the update)."""
    total = 0
    for i in range(0, len(blob), DESC_BYTES):
        d = unpack(blob[i:i + DESC_BYTES])
        m, n, k = d["m"], d["n"], 16 * d["kblocks"]
        total += 2 * (m + n) * k + (2 * m * n if d["flags"] & Flag.MASK else 0)
        if d["flags"] & Flag.UPDATE:  # FP32 master and momentum in and out, W and W^T
            total += 16 * m * n + 2 * m * n * ((d["out_cap"] > 0) + (d["filt_cap"] > 0))
        elif not d["flags"] & Flag.KEEP:
            if d["flags"] & Flag.RAW:
                total += 4 * m * n
            else:
                total += 2 * m * n * ((d["out_cap"] > 0) + (d["filt_cap"] > 0))
    return total


@cocotb.test()
async def sim_main(dut):
    cfg = get_config(CONFIG)
    ds = data.load_digits()
    rng = np.random.default_rng(SEED)
    model = train.build_model("mlp", ds.image_shape, ds.n_classes, SIZES[1:-1])
    model.init(rng)
    layers = model.gemm_layers
    ctrl = {(i, k): sparsity.ThresholdController(0.9, margin=0.004)
            for i in range(len(layers) - 1) for k in ("act", "err")}
    step = MLPStep(SIZES, BATCH, cfg, update=True)  # the whole step on the chip
    sys = System(dut, cfg, step.dram_size, SEED)
    await sys.start()
    await sys.load(step.state_writes([layer.w for layer in layers]))
    order = rng.permutation(len(ds.y_train))
    out = {"config": CONFIG, "steps": [], "golden_match": True, "tensors_checked": 0,
           "mismatch": None}
    wall0 = time.perf_counter()
    for s in range(STEPS):
        idx = order[(s * BATCH) % len(order):][:BATCH]
        x, labels = ds.x_train[idx].reshape(BATCH, -1), ds.y_train[idx]
        thr = {key: (c.threshold, c.base) for key, c in ctrl.items()}
        await sys.load(step.input_writes(x) + step.descriptor_writes(thr, HYPER))
        rec = {"jobs": {}}
        for job in ("fp", "bp"):
            j = step.jobs[job]
            try:
                st = await sys.run_both(job, j.desc_base, j.count)
            except AssertionError as exc:
                out["golden_match"] = False
                out["mismatch"] = f"step {s}, job {job}: {exc}"
                break
            if not st.ok:
                out["golden_match"] = False
                out["mismatch"] = f"step {s}, job {job}: {st}"
                break
            out["tensors_checked"] += sum(1 for name in step.tensors
                                          if name.rstrip("0123456789") in WRITES[job])
            regs = {name: (await sys.rtl.read_reg(name))["count"] for name in (
                "cycles", "cycles_fp", "cycles_bp", "cycles_wg", "bytes_read",
                "bytes_written")}
            blob = bytes(sys.gold_tr.dram[j.desc_base:j.desc_base + j.count * DESC_BYTES])
            regs["fp16_bytes"] = fp16_bytes(blob)
            regs["descriptors"] = j.count
            rec["jobs"][job] = regs
            if job == "fp":
                logits = (await sys.rtl.read_tensor(step.tensors["logits"])).value()
                loss, g, correct = nn.softmax_cross_entropy(logits, labels)
                await sys.load(step.loss_grad_writes(g))
        if not out["golden_match"]:
            break
        records = {job: await sys.rtl.read_stats(step.stats_regions(job)) for job in ("fp", "bp")}
        macs = step.macs(records)
        rec["macs"] = {f"{layer}:{phase}": v for (layer, phase), v in macs.items()}
        stats = step.filter_stats(records)
        rec["sparsity"] = {f"{i}:{k}": {"natural": st.zeros / st.values,
                                        "filtered": st.filtered_zeros / st.values,
                                        "te": st.threshold.te, "tm": st.threshold.tm}
                           for (i, k), st in stats.items()}
        rec["loss"], rec["correct"] = float(loss), int(correct)
        out["steps"].append(rec)
        for key, c in ctrl.items():
            c.update(stats[key])
        dut._log.info(f"step {s + 1}/{STEPS}: loss {loss:.4f}, {correct}/{BATCH} correct, "
                      f"golden match so far")
    wall = time.perf_counter() - wall0
    out["sim_cycles"] = int(cocotb.utils.get_sim_time("ns") // CLOCK_NS)
    out["wall_seconds"] = wall
    out["raw_record_bytes"] = RAW_RECORD_BYTES
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    assert out["golden_match"], out["mismatch"]
