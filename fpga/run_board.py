"""Train the digits MLP on a board through its UART bridge (the host side of ``fpga.boards``).

    python -m fpga.run_board --port /dev/ttyUSB1 --board icebreaker [--steps 5] [--check]

Opens the board's serial port with :class:`runtime.serial_transport.SerialTransport` (115200
baud, the rate of :data:`fpga.boards.BOARDS`), pings the UART bridge, and runs training steps
with :func:`runtime.driver.train_step` (the same driver the simulations use): the FP job, the
loss gradient on the host, the BP job, then the host's SGD update of the FP32 master weights
and the threshold controllers (target sparsity 0.9). With ``--check`` every step also runs on
the golden job executor (:class:`runtime.transport.GoldenTransport`) and the logits, weight
gradients and statistics records read from the board must equal it bit for bit.

The MLP (default ``64,64,10``, batch 32: 60 KiB of image) must fit the board's memory
(128 KiB). At 115200 baud a step moves about 40 KB over the line, roughly 4 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np

from fpga.boards import BOARDS
from golden import data, nn, sparsity, train
from hdl.config import get_config
from runtime.driver import Accelerator, train_step
from runtime.image import MLPStep
from runtime.serial_transport import SerialTransport
from runtime.transport import GoldenTransport

__all__ = ["main", "run"]


async def run(transport, cfg, mem_bytes: int, sizes, batch: int, steps: int, seed: int,
              check: bool, log=print) -> list:
    """``steps`` training steps over ``transport``; returns the per-step ``(loss, correct)``."""
    step = MLPStep(sizes, batch, cfg)
    if step.dram_size > mem_bytes:
        raise ValueError(f"The MLP {sizes} at batch {batch} needs {step.dram_size} bytes of "
                         f"memory; the board has {mem_bytes}")
    ds = data.load_digits()
    rng = np.random.default_rng(seed)
    model = train.build_model("mlp", ds.image_shape, ds.n_classes, list(sizes[1:-1]))
    model.init(rng)
    layers = model.gemm_layers
    opt = nn.SGD(layers, 0.05, 0.9, 5e-4)
    ctrl = {(i, k): sparsity.ThresholdController(0.9, margin=0.004)
            for i in range(len(layers) - 1) for k in ("act", "err")}
    acc = Accelerator(transport)
    await acc.init(mem_bytes)
    gold = None
    if check:
        gold = Accelerator(GoldenTransport(cfg, mem_bytes))
        await gold.init(mem_bytes)
    order = rng.permutation(len(ds.y_train))
    out = []
    for s in range(steps):
        idx = order[(s * batch) % len(order):][:batch]
        x, labels = ds.x_train[idx].reshape(batch, -1), ds.y_train[idx]
        thr = {key: (c.threshold, c.base) for key, c in ctrl.items()}
        weights = [layer.w for layer in layers]
        t0 = time.monotonic()
        res = await train_step(acc, step, weights, x, labels, thr)
        if gold is not None:
            want = await train_step(gold, step, weights, x, labels, thr)
            same = (np.array_equal(res.logits, want.logits) and res.records == want.records
                    and all(np.array_equal(a, b) for a, b in zip(res.grads, want.grads,
                                                                 strict=True)))
            if not same:
                raise AssertionError(f"step {s + 1}: the board and the golden model differ")
        for layer, g in zip(layers, res.grads, strict=True):
            layer.grad = g
        opt.step()
        for key, c in ctrl.items():
            c.update(res.stats[key])
        macs = sum(r.macs_nonzero for recs in res.records.values() for r in recs)
        dense = sum(r.macs_dense for recs in res.records.values() for r in recs)
        log(f"step {s + 1}/{steps}: loss {res.loss:.4f}, {res.correct}/{batch} correct, "
            f"MACs {macs}/{dense} dense, {time.monotonic() - t0:.1f} s"
            + (", golden match" if check else ""))
        out.append((res.loss, res.correct))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, help="serial port (e.g. /dev/ttyUSB1)")
    ap.add_argument("--board", choices=sorted(BOARDS), required=True)
    ap.add_argument("--config", help="engine configuration built into the bitstream "
                                     "(default: the board's)")
    ap.add_argument("--sizes", default="64,64,10")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="compare with the golden model")
    args = ap.parse_args(argv)
    b = BOARDS[args.board]
    cfg = get_config(args.config or b["config"])
    tr = SerialTransport(args.port, baudrate=b["baud"], timeout=2.0)
    try:
        tr.ping()
        sizes = tuple(int(v) for v in args.sizes.split(","))
        asyncio.run(run(tr, cfg, b["mem_bytes"], sizes, args.batch, args.steps, args.seed,
                        args.check))
    finally:
        tr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
