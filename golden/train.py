"""Golden training: FP32, BFP8 and BFP8 with sparsity scaling, on the chip's numerics.

Run ``python -m golden.train --dataset digits --model mlp --mode bfp8-ss --target-sparsity 0.9
--epochs 20 --seed 0 --json OUT``. Modes:

``fp32``
    every MAC in float32 (the baseline);
``bfp8``
    every MAC of FP, BP and WG through :func:`golden.gemm.matmul` on BFP8 operands
    (:mod:`golden.nn`); the weights are updated in an FP32 master copy;
``bfp8-ss``
    ``bfp8`` plus the sparsity filter (:func:`golden.sparsity.filter`) on the interim tensors
    named by ``--filter-at``, each steered toward ``--target-sparsity`` by its own
    :class:`golden.sparsity.ThresholdController` (one per layer and tensor kind, updated after
    every training step from the filter's statistics, as the host would from the counters).

Where the filter acts (``--filter-at``, a comma list):

``saved``
    the copy of a stage's output activations kept for the backward pass (the WG operand); the
    forward path keeps the unfiltered values, so the chip stores both;
``fwd``
    the forward path itself (the next layer computes on the filtered values, and the same
    filtered copy is kept for the backward pass);
``err``
    the errors written by BP (the gradient at each hidden stage's output).

``--mask-from`` says which stored copy BP reads its relu' output mask from: ``forward`` (the
unfiltered copy: the true relu' of the forward pass) or ``saved`` (the filtered copy: gradients
flow only through the activations that survived the filter). The defaults, ``saved,err`` with
the mask from ``forward``, were chosen by measurement (``docs/results/training.md``).

The JSON result holds ``test_accuracy``; ``interim_sparsity``, the element-weighted mean
sparsity over the last epoch of the interim tensors the filter acts on (in ``fp32`` and
``bfp8``: of the same tensors as they are); ``macs`` (``dense``: every MAC of FP, BP and WG in
the last epoch; ``nonzero``: those with both operands nonzero and, in BP, an unmasked output);
``dram_bytes`` of the interim tensors written in the last epoch (``fp16_dense`` and
``bfp8_dense``: one dense copy of each; ``hbm``: the HBM v1 streams this mode stores, the extra
filtered copy included when only the saved copy is filtered); per-layer and per-tensor detail
and the per-epoch history.

``--update fixed`` replaces the FP32 weight update (:class:`golden.nn.SGD`) by the update
unit's fixed-point one (:class:`golden.update.FixedSGD`: int32 master and velocity, gradient
from the exact WG accumulators, BFP8 copies re-quantized from the master by the converter's
rule); the default ``fp32`` leaves everything as it was.

``--dump DIR`` writes every GEMM (operands, output mask, accumulators) and every interim tensor
(converter output, threshold, filtered tensor, HBM v1 stream) of one training step, as vectors
for RTL tests; ``DIR/manifest.json`` lists them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import data as data_mod
from . import hbm, nn, sparsity, update
from .bfp import quantize

__all__ = [
    "MODES",
    "MODELS",
    "PLACES",
    "DEFAULT_FILTER_AT",
    "UPDATES",
    "build_model",
    "train",
    "main",
]

MODES = ("fp32", "bfp8", "bfp8-ss")
MODELS = ("mlp", "cnn")
PLACES = ("fwd", "saved", "err")
DEFAULT_FILTER_AT = ("saved", "err")
DEFAULTS = dict(dataset="digits", data_dir=None, limit_train=None, limit_test=None, model="mlp",
                mode="bfp8", target_sparsity=0.9, controller_margin=0.004,
                filter_at=DEFAULT_FILTER_AT,
                mask_from="forward", epochs=20, batch=32, lr=0.05, momentum=0.9,
                weight_decay=5e-4, seed=0, hidden=(128, 64), update="fp32")
UPDATES = ("fp32", "fixed")


def build_model(name: str, image_shape, n_classes: int, hidden=(128, 64)) -> nn.Sequential:
    """The two reference networks.

    ``mlp``: Linear(H*W, h1) ReLU [Linear(h1, h2) ReLU ...] Linear(., classes).
    ``cnn``: Conv 3x3 (1 -> 16, pad 1) ReLU MaxPool 2, Conv 3x3 (16 -> 32, pad 1) ReLU
    MaxPool 2, Flatten, Linear(32 * H/4 * W/4, classes).
    """
    h, w = image_shape
    if name == "mlp":
        layers, k = [], h * w
        for width in hidden:
            layers += [nn.Linear(k, width), nn.ReLU()]
            k = width
        layers.append(nn.Linear(k, n_classes))
        return nn.Sequential(layers, (h, w), n_classes)
    if name == "cnn":
        if h % 4 or w % 4:
            raise ValueError(f"The cnn model needs image sides divisible by 4, not {h}x{w}")
        return nn.Sequential([
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), n_classes)], (h, w), n_classes)
    raise ValueError(f"Unknown model {name!r}: expected one of {MODELS}")


def _check_config(cfg: dict) -> dict:
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown training options: {sorted(unknown)}")
    c = dict(DEFAULTS, **cfg)
    if c["mode"] not in MODES:
        raise ValueError(f"Unknown mode {c['mode']!r}: expected one of {MODES}")
    if c["model"] not in MODELS:
        raise ValueError(f"Unknown model {c['model']!r}: expected one of {MODELS}")
    for key in ("epochs", "batch"):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key} must be a positive integer, not {v!r}")
    ts = c["target_sparsity"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts < 1:
        raise ValueError(f"target_sparsity must be in [0, 1), not {ts!r}")
    cm = c["controller_margin"]
    if isinstance(cm, bool) or not isinstance(cm, (int, float)) or not 0 <= cm < 1 - ts:
        raise ValueError(f"controller_margin must be >= 0 with target_sparsity + margin < 1, "
                         f"not {cm!r}")
    for key in ("lr", "momentum", "weight_decay"):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{key} must be a number >= 0, not {v!r}")
    s = c["seed"]
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
        raise ValueError(f"seed must be a non-negative integer, not {s!r}")
    places = tuple(c["filter_at"])
    if not places or any(p not in PLACES for p in places) or len(set(places)) != len(places):
        raise ValueError(f"filter_at must be a non-empty set of {PLACES}, not {c['filter_at']!r}")
    c["filter_at"] = tuple(p for p in PLACES if p in places)
    if c["mask_from"] not in ("saved", "forward"):
        raise ValueError(f"mask_from must be 'saved' or 'forward', not {c['mask_from']!r}")
    hidden = tuple(c["hidden"])
    if not hidden or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                         or v % 16 for v in hidden):
        raise ValueError(f"hidden sizes must be positive multiples of 16 (interim tensors fill "
                         f"whole blocks), not {c['hidden']!r}")
    c["hidden"] = tuple(int(v) for v in hidden)
    if c["update"] not in UPDATES:
        raise ValueError(f"Unknown update {c['update']!r}: expected one of {UPDATES}")
    return c


class _Interim:
    """Filters the interim tensors (``bfp8-ss``) and accumulates their statistics.

    The model calls :meth:`activation` and :meth:`error` (the hooks of
    :meth:`golden.nn.Sequential.train_step`) with every interim tensor as the converter
    writes it.
    """

    def __init__(self, cfg, names):
        self.filtering = cfg["mode"] == "bfp8-ss"
        self.places = cfg["filter_at"]
        self.act_filtered = "fwd" in self.places or "saved" in self.places
        self.err_filtered = "err" in self.places
        self.names = names  # stage index -> layer name
        self.ctrl = {}
        if self.filtering:
            for i in range(len(names)):
                if self.act_filtered:
                    self.ctrl[(i, "act")] = sparsity.ThresholdController(
                        cfg["target_sparsity"], margin=cfg["controller_margin"])
                if self.err_filtered:
                    self.ctrl[(i, "err")] = sparsity.ThresholdController(
                        cfg["target_sparsity"], margin=cfg["controller_margin"])
        self.detail = False  # byte counts (last epoch)
        self.trace = None  # list of dump records at the dump step
        self.reset()

    def reset(self):
        self.acc = {}

    def _filter(self, key, t: nn.Tensor) -> nn.Tensor:
        ctrl = self.ctrl[key]
        tau = ctrl.threshold
        st = sparsity.stats(t.bfp, threshold=tau, base=ctrl.base)
        f = sparsity.filter(t.bfp, tau)
        ctrl.update(st)
        out = nn.Tensor(f.dequantize(), f, t.geom)
        self._dump(key, t, out, tau)
        return out, tau

    def _dump(self, key, natural, stored, tau):
        if self.trace is None:
            return
        self.trace.append(dict(key=key, natural=natural.bfp, stored=stored.bfp, tau=tau))

    def _record(self, key, natural: nn.Tensor, stored: nn.Tensor, tau, extra_copy: bool):
        a = self.acc.setdefault(key, dict(values=0, natural_zeros=0, zeros=0, tau_sum=0.0,
                                          steps=0, hbm_bits=0, dense_values=0, blocks=0))
        nz_nat = natural.nonzero()
        nz = stored.nonzero()
        a["values"] += nz.size
        a["natural_zeros"] += int(nz.size - nz_nat.sum())
        a["zeros"] += int(nz.size - nz.sum())
        a["tau_sum"] += 0.0 if tau is None else tau.value
        a["steps"] += 1
        if self.detail:
            bits = 0
            for t in ((natural, stored) if extra_copy else (stored,)):
                b = t.bfp if t.bfp is not None else quantize(t.values)
                bits += hbm.size_bits(b.mantissas.reshape(-1, nn.BLOCK))
            a["hbm_bits"] += bits

    def activation(self, i, t):
        key = (i, "act")
        if key in self.ctrl:
            f, tau = self._filter(key, t)
            fwd = f if "fwd" in self.places else t
            self._record(key, t, f, tau, extra_copy=fwd is not f)
            return fwd, f
        self._dump(key, t, t, None)
        self._record(key, t, t, None, extra_copy=False)
        return t, t

    def error(self, i, t):
        key = (i, "err")
        if key in self.ctrl:
            f, tau = self._filter(key, t)
            self._record(key, t, f, tau, extra_copy=False)
            return f
        self._dump(key, t, t, None)
        self._record(key, t, t, None, extra_copy=False)
        return t

    def acted_on(self, kind):
        return self.act_filtered if kind == "act" else self.err_filtered

    def sparsity(self):
        """Element-weighted sparsity of the tensors the filter acts on (placement set)."""
        vals = zeros = 0
        for (_, kind), a in self.acc.items():
            if self.acted_on(kind):
                vals += a["values"]
                zeros += a["zeros"]
        return zeros / vals if vals else 0.0

    def natural_sparsity(self):
        vals = zeros = 0
        for (_, kind), a in self.acc.items():
            if self.acted_on(kind):
                vals += a["values"]
                zeros += a["natural_zeros"]
        return zeros / vals if vals else 0.0


class _Progress:
    """A progress bar on stderr (redrawn in place on a terminal, one line per epoch otherwise)."""

    def __init__(self, epochs, steps, enabled=True, stream=None):
        self.epochs, self.steps, self.enabled = epochs, steps, enabled
        self.stream = stream or sys.stderr
        self.tty = self.enabled and self.stream.isatty()

    def step(self, epoch, step, info):
        if not self.tty:
            return
        width = 24
        done = int(width * step / self.steps)
        bar = "#" * done + "-" * (width - done)
        self.stream.write(f"\repoch {epoch + 1}/{self.epochs} [{bar}] {step}/{self.steps} "
                          f"{info}\x1b[K")
        self.stream.flush()

    def epoch(self, epoch, info):
        if not self.enabled:
            return
        bar = "#" * 24
        prefix = "\r" if self.tty else ""
        self.stream.write(f"{prefix}epoch {epoch + 1}/{self.epochs} [{bar}] {self.steps}/"
                          f"{self.steps} {info}\x1b[K\n" if self.tty else
                          f"epoch {epoch + 1}/{self.epochs} {info}\n")
        self.stream.flush()


def _evaluate(model, nx, hooks, x, y, batch=256):
    correct = 0
    for i in range(0, len(y), batch):
        logits = model.forward(nx, x[i:i + batch], hooks)
        correct += int((logits.argmax(axis=1) == y[i:i + batch]).sum())
    return correct / len(y)


class _EvalHooks:
    """Inference: the forward path is filtered (without updating the controllers) iff it was
    filtered in training."""

    def __init__(self, interim: _Interim):
        self.interim = interim

    def activation(self, i, t):
        key = (i, "act")
        if "fwd" in self.interim.places and key in self.interim.ctrl:
            f = sparsity.filter(t.bfp, self.interim.ctrl[key].threshold)
            t = nn.Tensor(f.dequantize(), f, t.geom)
        return t, t

    def error(self, i, t):  # pragma: no cover - inference has no errors
        return t


def train(cfg: dict | None = None, progress: bool = False, dump_dir=None, dump_step=None,
          dataset: data_mod.Dataset | None = None) -> dict:
    """Train one network; return the result dictionary (module docstring).

    Parameters
    ----------
    cfg : dict
        Options (keys of ``DEFAULTS``); missing ones take their default.
    progress : bool
        Draw a progress bar on stderr.
    dump_dir : path, optional
        Write the tensors of training step ``dump_step`` (default: the first step of the
        last epoch) there.
    dataset : Dataset, optional
        Use this data instead of loading ``cfg["dataset"]``.
    """
    c = _check_config(cfg or {})
    t_start = time.perf_counter()
    ds = dataset if dataset is not None else data_mod.load(
        c["dataset"], c["data_dir"], c["limit_train"], c["limit_test"])
    model = build_model(c["model"], ds.image_shape, ds.n_classes, c["hidden"])
    rng = np.random.default_rng(c["seed"])
    model.init(rng)
    nx = nn.Numerics("fp32" if c["mode"] == "fp32" else "bfp8")
    names = [layer.name for layer in model.gemm_layers]
    interim = _Interim(c, names[:-1])
    eval_hooks = _EvalHooks(interim)
    if c["update"] == "fixed":
        opt = update.FixedSGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
        nx.exact_weights = True
    else:
        opt = nn.SGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    n_train = len(ds.y_train)
    steps = math.ceil(n_train / c["batch"])
    total = steps * c["epochs"]
    if dump_dir is not None:
        if c["mode"] == "fp32":
            raise ValueError("--dump writes BFP8 vectors: use mode bfp8 or bfp8-ss")
        dump_step = (c["epochs"] - 1) * steps if dump_step is None else dump_step
        if isinstance(dump_step, bool) or not isinstance(dump_step, (int, np.integer)) \
                or not 0 <= dump_step < total:
            raise ValueError(f"dump_step must be an integer in [0, {total}), not {dump_step!r}")
    bar = _Progress(c["epochs"], steps, progress)
    history = []
    for epoch in range(c["epochs"]):
        t0 = time.perf_counter()
        last = epoch == c["epochs"] - 1
        interim.reset()
        interim.detail = last
        nx.macs = {} if last else None
        perm = rng.permutation(n_train)
        loss_sum, correct = 0.0, 0
        for s in range(steps):
            idx = perm[s * c["batch"]:(s + 1) * c["batch"]]
            g = epoch * steps + s
            lr = 0.5 * c["lr"] * (1 + math.cos(math.pi * g / total))  # cosine decay to 0
            dumping = dump_dir is not None and g == dump_step
            if dumping:
                nx.trace, interim.trace = [], []
                w_before = [layer.w.copy() for layer in model.gemm_layers]
            loss, ok = model.train_step(nx, ds.x_train[idx], ds.y_train[idx], interim,
                                        c["mask_from"])
            opt.step(lr)
            if dumping:
                _write_dump(Path(dump_dir), c, model, nx.trace, interim.trace, w_before,
                            ds.x_train[idx], ds.y_train[idx], g, lr)
                nx.trace = interim.trace = None
            loss_sum += loss * len(idx)
            correct += ok
            bar.step(epoch, s + 1, f"loss {loss_sum / min(n_train, (s + 1) * c['batch']):.4f}")
        counting, nx.macs = nx.macs, None  # MACs and bytes are of training steps only
        test_acc = _evaluate(model, nx, eval_hooks, ds.x_test, ds.y_test)
        nx.macs = counting
        h = dict(epoch=epoch + 1, train_loss=loss_sum / n_train, train_accuracy=correct / n_train,
                 test_accuracy=test_acc, interim_sparsity=interim.sparsity(),
                 seconds=time.perf_counter() - t0)
        history.append(h)
        bar.epoch(epoch, f"loss {h['train_loss']:.4f} train {h['train_accuracy']:.4f} "
                  f"test {test_acc:.4f} sparsity {h['interim_sparsity']:.3f} "
                  f"({h['seconds']:.1f} s)")
    return _result(c, ds, model, nx, interim, history, time.perf_counter() - t_start)


def _result(c, ds, model, nx, interim, history, seconds):
    layers = []
    dense = nonzero = 0
    by_phase = {p: {"dense": 0, "nonzero": 0} for p in ("fp", "bp", "wg")}
    for layer in model.gemm_layers:
        entry = {"name": layer.name, "type": type(layer).__name__, "macs": {}}
        for phase in ("fp", "bp", "wg"):
            d, z = nx.macs.get((layer.name, phase), (0, 0))
            if d:
                entry["macs"][phase] = {"dense": d, "nonzero": z}
                by_phase[phase]["dense"] += d
                by_phase[phase]["nonzero"] += z
            dense += d
            nonzero += z
        layers.append(entry)
    tensors = []
    fp16 = bfp8 = hbm_bytes = 0
    for (i, kind), a in sorted(interim.acc.items()):
        v = a["values"]
        t_fp16, t_bfp8, t_hbm = 2 * v, v + v // nn.BLOCK, a["hbm_bits"] // 8
        fp16 += t_fp16
        bfp8 += t_bfp8
        hbm_bytes += t_hbm
        tensors.append({
            "name": f"{interim.names[i]}.{kind}",
            "kind": "activation" if kind == "act" else "error",
            "layer": interim.names[i],
            "filter": c["mode"] == "bfp8-ss" and interim.acted_on(kind),
            "in_interim_sparsity": interim.acted_on(kind),
            "elements": v,
            "natural_sparsity": a["natural_zeros"] / v if v else 0.0,
            "sparsity": a["zeros"] / v if v else 0.0,
            "tau_mean": a["tau_sum"] / a["steps"] if a["steps"] else 0.0,
            "dram_bytes": {"fp16_dense": t_fp16, "bfp8_dense": t_bfp8, "hbm": t_hbm},
        })
    last = history[-1]
    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
        "dataset": {"name": ds.name, "train": int(len(ds.y_train)), "test": int(len(ds.y_test)),
                    "image_shape": list(ds.image_shape), "classes": ds.n_classes},
        "test_accuracy": last["test_accuracy"],
        "train_accuracy": last["train_accuracy"],
        "train_loss": last["train_loss"],
        "interim_sparsity": interim.sparsity(),
        "natural_sparsity": interim.natural_sparsity(),
        "macs": {"dense": dense, "nonzero": nonzero, "by_phase": by_phase},
        "dram_bytes": {"fp16_dense": fp16, "bfp8_dense": bfp8, "hbm": hbm_bytes},
        "layers": layers,
        "tensors": tensors,
        "history": history,
        "seconds": seconds,
    }


def _bfp_arrays(prefix, t):
    return {f"{prefix}_exponents": t.exponents, f"{prefix}_mantissas": t.mantissas}


def _write_dump(d: Path, c, model, gemms, interims, w_before, x, y, step, lr):
    """Write one training step's vectors (module docstring) into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Tensors of one golden training step. GEMMs: C = A @ B.T with "
                       "golden.gemm.matmul (a_*, b_*: BFP8 operands blocked along the "
                       "reduction axis; out_mask: outputs computed; acc_mant/acc_exp: the "
                       "accumulators S, ea). Interim tensors: natural_* is the converter's "
                       "output, stored_* what is kept after the filter with threshold "
                       "tau = tm * 2**(te - 133); *.hbm is the HBM v1 stream of stored_*.",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()},
        "step": step, "lr": lr, "gemms": [], "interim": [],
    }
    np.savez_compressed(d / "step_inputs.npz", images=x, labels=y,
             **{f"w_{layer.name}": w for layer, w in zip(model.gemm_layers, w_before,
                                                          strict=True)})
    manifest["inputs"] = "step_inputs.npz"
    for n, r in enumerate(gemms):
        name = f"gemm{n:02d}_{r['layer']}_{r['phase']}.npz"
        arrays = {**_bfp_arrays("a", r["a"]), **_bfp_arrays("b", r["b"]),
                  "acc_mant": r["acc"].mant, "acc_exp": r["acc"].exp}
        if r["out_mask"] is not None:
            arrays["out_mask"] = np.asarray(r["out_mask"])
        np.savez_compressed(d / name, **arrays)
        manifest["gemms"].append({"file": name, "layer": r["layer"], "phase": r["phase"],
                                  "a_shape": list(r["a"].shape), "b_shape": list(r["b"].shape),
                                  "masked": r["out_mask"] is not None})
    for r in interims:
        i, kind = r["key"]
        base = f"{model.gemm_layers[i].name}_{kind}"
        np.savez_compressed(d / f"{base}.npz", **_bfp_arrays("natural", r["natural"]),
                 **_bfp_arrays("stored", r["stored"]))
        (d / f"{base}.hbm").write_bytes(hbm.encode_tensor(r["stored"]))
        tau = r["tau"]
        manifest["interim"].append({
            "file": f"{base}.npz", "hbm": f"{base}.hbm", "layer": model.gemm_layers[i].name,
            "kind": kind, "shape": list(r["stored"].shape),
            "tau": None if tau is None else {"te": tau.te, "tm": tau.tm, "value": tau.value},
        })
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _parser():
    p = argparse.ArgumentParser(prog="python -m golden.train", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("digits", "idx"), default="digits")
    p.add_argument("--data-dir", default=None, help="directory of the four IDX files (idx)")
    p.add_argument("--limit-train", type=int, default=None, help="first N training samples")
    p.add_argument("--limit-test", type=int, default=None, help="first N test samples")
    p.add_argument("--model", choices=MODELS, default=DEFAULTS["model"])
    p.add_argument("--mode", choices=MODES, default=DEFAULTS["mode"])
    p.add_argument("--target-sparsity", type=float, default=DEFAULTS["target_sparsity"])
    p.add_argument("--controller-margin", type=float, default=DEFAULTS["controller_margin"],
                   help="the controllers regulate to target + margin, so that the mean "
                        "sparsity reaches the target (default %(default)s)")
    p.add_argument("--filter-at", default=",".join(DEFAULT_FILTER_AT),
                   help=f"where the filter acts (bfp8-ss): comma list of {', '.join(PLACES)}")
    p.add_argument("--mask-from", choices=("saved", "forward"), default=DEFAULTS["mask_from"],
                   help="copy of the activations BP reads its relu' mask from")
    p.add_argument("--hidden", default=",".join(map(str, DEFAULTS["hidden"])),
                   help="mlp hidden sizes, multiples of 16")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--momentum", type=float, default=DEFAULTS["momentum"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--update", choices=UPDATES, default=DEFAULTS["update"],
                   help="weight update: fp32 (FP32 master, golden.nn.SGD) or fixed (the "
                        "update unit's fixed point, golden.update.FixedSGD)")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--dump", default=None, metavar="DIR",
                   help="write the tensors of one training step into DIR")
    p.add_argument("--dump-step", type=int, default=None,
                   help="global step to dump (default: first step of the last epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    try:
        hidden = tuple(int(v) for v in a.hidden.split(","))
    except ValueError:
        p.error(f"--hidden must be a comma list of integers, not {a.hidden!r}")
    cfg = dict(dataset=a.dataset, data_dir=a.data_dir, limit_train=a.limit_train,
               limit_test=a.limit_test, model=a.model, mode=a.mode,
               target_sparsity=a.target_sparsity, controller_margin=a.controller_margin,
               filter_at=tuple(s.strip() for s in a.filter_at.split(",")),
               mask_from=a.mask_from, epochs=a.epochs,
               batch=a.batch, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
               seed=a.seed, hidden=hidden, update=a.update)
    try:
        res = train(cfg, progress=not a.quiet, dump_dir=a.dump, dump_step=a.dump_step)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    m, d = res["macs"], res["dram_bytes"]
    print(f"{res['config']['model']} {res['config']['mode']} seed {res['config']['seed']}: "
          f"test accuracy {res['test_accuracy']:.4f}, interim sparsity "
          f"{res['interim_sparsity']:.3f} (natural {res['natural_sparsity']:.3f}), MACs "
          f"nonzero/dense {m['nonzero'] / m['dense']:.3f}, DRAM hbm/fp16 "
          f"{d['hbm'] / d['fp16_dense']:.3f}, {res['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
