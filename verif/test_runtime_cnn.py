"""CNN training steps through the host runtime on the golden transport: every tensor the
accelerator writes, the weight gradients, the statistics and the MAC counts equal
golden.train's bfp8-ss step bit for bit (runtime/cnn.py, docs/system.md "CNN steps")."""

import asyncio

import numpy as np
import pytest

from golden import data, nn, sparsity, train
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Flag, unpack
from runtime.cnn import CNNStep, cnn_train_step
from runtime.driver import Accelerator
from runtime.transport import GoldenTransport


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def _cnn():
    return train.build_model("cnn", (8, 8), 10)


def _flat(t, rows):
    """A BFPTensor viewed with ``rows`` rows (blocks stay blocks)."""
    from golden.bfp import BFPTensor
    return BFPTensor(t.exponents.reshape(rows, -1), t.mantissas.reshape(rows, -1))


def _check_interim_copies(read, interim):
    """Both copies of every interim tensor of golden.train's step (``interim.trace``) equal
    what the accelerator wrote: ``y``/``s`` (activations), ``ye``/``e`` (errors)."""
    for rec in interim.trace:
        i, kind = rec["key"]
        fwd, saved = ("y", "s") if kind == "act" else ("ye", "e")
        rows = rec["natural"].shape[0]
        assert _flat(read(f"{fwd}{i}"), rows) == rec["natural"]
        assert _flat(read(f"{saved}{i}"), rows) == rec["stored"]


def _golden_cnn(seed):
    """golden.train's CNN with its bfp8-ss configuration: (model, config, layer names,
    interim-tensor state with the threshold controllers)."""
    model = _cnn()
    model.init(np.random.default_rng(seed))
    c = train._check_config(dict(mode="bfp8-ss", model="cnn", target_sparsity=0.8))
    names = [layer.name for layer in model.gemm_layers]
    return model, c, names, train._Interim(c, names[:-1])


@pytest.mark.parametrize("config,batch", [("tiny", 16), ("small", 32), ("default", 32)])
def test_cnn_training_steps_bit_exact(config, batch, seed, digits):
    steps = 2
    rng = np.random.default_rng(seed)
    model, c, names, interim = _golden_cnn(seed)
    opt = nn.SGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    # the host's own copies: master weights, optimizer, threshold controllers
    host = _cnn()
    for hl, gl in zip(host.gemm_layers, model.gemm_layers, strict=True):
        hl.w = gl.w.copy()
    host_opt = nn.SGD(host.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    host_ctrl = {key: sparsity.ThresholdController(c["target_sparsity"],
                                                   margin=c["controller_margin"])
                 for key in interim.ctrl}
    cfg = get_config(config)
    step = CNNStep(_cnn(), batch, cfg, error_copies=True)
    tr = GoldenTransport(cfg, step.dram_size)
    acc = Accelerator(tr)
    run(acc.init(step.dram_size))
    read = lambda name: run(acc.read_tensor(step.tensors[name]))  # noqa: E731
    L = len(names)
    filtered_something = False

    for _ in range(steps):
        idx = rng.choice(len(digits.y_train), batch, replace=False)
        x, labels = digits.x_train[idx], digits.y_train[idx]
        settings = {key: (ctl.threshold, ctl.base) for key, ctl in host_ctrl.items()}
        assert settings == {key: (ctl.threshold, ctl.base) for key, ctl in interim.ctrl.items()}
        # golden.train's step
        nx = nn.Numerics("bfp8")
        nx.trace, nx.macs, interim.trace = [], {}, []
        loss, correct = model.train_step(nx, x, labels, interim, mask_from=c["mask_from"])
        # the accelerator's step
        res = run(cnn_train_step(acc, step, [layer.w for layer in host.gemm_layers], x,
                                 labels, settings))
        assert (res.loss, res.correct) == (loss, correct)
        gemms = {(r["layer"], r["phase"]): r for r in nx.trace}
        assert len(gemms) == len(nx.trace) == 3 * L - 1

        def same_acc(got, ref, rows, cols):
            assert np.array_equal(got.mant, ref.mant[:rows, :cols])
            assert np.array_equal(got.exp, ref.exp[:rows, :cols])

        same_acc(read("logits"), gemms[(names[-1], "fp")]["acc"], batch, 10)
        # conv stages: the full convolution (RAW), the host's argmax, the operands
        for i, g in enumerate(step.convs):
            fp = gemms[(names[i], "fp")]
            same_acc(read(f"z{i}"), fp["acc"], *fp["acc"].shape)
            assert read(f"c{i}") == fp["a"]
            pool = model.stages[i].post[1]
            assert np.array_equal(res.argmax[i], pool._idx.reshape(-1, g.co))
            if i:
                assert read(f"dc{i}") == gemms[(names[i], "bp")]["a"]
        # interim tensors: natural and filtered copies, statistics
        _check_interim_copies(read, interim)
        for rec in interim.trace:
            i, kind = rec["key"]
            thr, base = settings[(i, kind)]
            assert res.stats[(i, kind)] == sparsity.stats(rec["natural"], threshold=thr,
                                                          base=base)
            filtered_something |= res.stats[(i, kind)].filtered_zeros > \
                res.stats[(i, kind)].zeros
        assert len(interim.trace) == 2 * (L - 1)
        assert read("xf") == gemms[(names[-1], "fp")]["a"]
        # weight gradients
        for layer, name in enumerate(names):
            wg = gemms[(name, "wg")]["acc"]
            dw = step.tensors[f"dw{layer}"]
            same_acc(read(f"dw{layer}"), wg, dw.rows, dw.cols)
            assert np.array_equal(res.grads[layer], model.gemm_layers[layer].grad)
        # MACs per layer and phase; dense counts the padded reduction axis
        macs = step.macs(res.records)
        for layer, name in enumerate(names):
            for phase in ("fp", "bp", "wg"):
                if phase == "bp" and layer == 0:
                    assert (layer, phase) not in macs
                    continue
                dense, nonzero = nx.macs[(name, phase)]
                if phase == "fp" and layer < L - 1:  # K = k*k*Cin stored, padded to 16
                    cv = model.gemm_layers[layer]
                    kdim = step.convs[layer].kdim
                    dense = dense // (cv.in_channels * cv.k * cv.k) * nn.pad16(kdim)
                if phase == "bp" and layer == L - 1:  # BP reduces over the padded classes
                    dense = dense // 10 * 16
                assert macs[(layer, phase)] == [dense, nonzero], (layer, phase)
        # the selection pass: every pooled output accumulated once, at its argmax pixel
        for i, g in enumerate(step.convs):
            fp = gemms[(names[i], "fp")]
            both = (fp["a"].mantissas != 0).astype(np.int64) @ \
                (fp["b"].mantissas != 0).astype(np.int64).T  # pixels x Co
            n_, hp, wp, co = model.stages[i].post[1]._idx.shape
            arg = model.stages[i].post[1]._idx
            a_, b_ = np.divmod(arg, 2)
            nn_, ii, jj, cc = np.indices(arg.shape)
            pix = (nn_ * g.ho + 2 * ii + a_) * g.wo + 2 * jj + b_
            dense = g.windows * n_ * hp * wp * co * nn.pad16(g.kdim)
            assert macs[(i, "sel")] == [dense, int(both[pix, cc].sum())]
        # the host's side of the loop: update, controllers from the accelerator's records
        opt.step()
        for hl, gr in zip(host.gemm_layers, res.grads, strict=True):
            hl.grad = gr
        host_opt.step()
        for key, ctl in host_ctrl.items():
            ctl.update(res.stats[key])
        for hl, gl in zip(host.gemm_layers, model.gemm_layers, strict=True):
            assert np.array_equal(hl.w, gl.w)
    assert filtered_something  # the second step ran with nonzero thresholds
    assert all(r.ok for r in tr.jobs) and len(tr.jobs) == len(step.job_order) * steps


@pytest.mark.parametrize("config,batch", [("tiny", 16), ("default", 32)])
def test_cnn_steps_with_on_chip_update(config, batch, seed, digits):
    """update=True: the weights never leave the chip; every step's loss and logits, the
    interim tensors, and after every step the masters and velocities of every layer equal
    golden.train with the fixed-point update (golden.update.FixedSGD)."""
    from golden import update

    steps = 2
    rng = np.random.default_rng(seed)
    model, c, names, interim = _golden_cnn(seed)
    w0 = [layer.w.copy() for layer in model.gemm_layers]
    opt = update.FixedSGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    host_ctrl = {key: sparsity.ThresholdController(c["target_sparsity"],
                                                   margin=c["controller_margin"])
                 for key in interim.ctrl}
    cfg = get_config(config)
    step = CNNStep(_cnn(), batch, cfg, error_copies=True, update=True)
    assert not any(name.startswith("dw") for name in step.tensors)
    tr = GoldenTransport(cfg, step.dram_size)
    acc = Accelerator(tr)
    run(acc.init(step.dram_size))
    run(acc.load(step.state_writes(w0)))
    read = lambda name: run(acc.read_tensor(step.tensors[name]))  # noqa: E731
    hyper = (c["lr"], c["momentum"], c["weight_decay"])
    for _ in range(steps):
        idx = rng.choice(len(digits.y_train), batch, replace=False)
        x, labels = digits.x_train[idx], digits.y_train[idx]
        settings = {key: (ctl.threshold, ctl.base) for key, ctl in host_ctrl.items()}
        nx = nn.Numerics("bfp8")
        nx.exact_weights = True
        nx.trace, nx.macs, interim.trace = [], {}, []
        loss, correct = model.train_step(nx, x, labels, interim, mask_from=c["mask_from"])
        res = run(cnn_train_step(acc, step, None, x, labels, settings, hyper=hyper))
        assert (res.loss, res.correct) == (loss, correct) and res.grads is None
        gemms = {(r["layer"], r["phase"]): r for r in nx.trace}
        # the BP operands (the W^T copies the previous update wrote, walked flipped)
        for i in range(1, len(step.convs)):
            assert read(f"dc{i}") == gemms[(names[i], "bp")]["a"]
        _check_interim_copies(read, interim)
        opt.step()
        for layer in range(step.layers):
            t = step.tensors[f"st{layer}"]
            tiles = {key: tr.dram[a:a + cap] for key, (a, cap) in t.regions.items()}
            master, velocity = step.read_state(layer, tiles)
            assert np.array_equal(master, opt.master[layer]), layer
            assert np.array_equal(velocity, opt.velocity[layer]), layer
            assert velocity.any()
        for key, ctl in host_ctrl.items():
            ctl.update(res.stats[key])
    assert all(r.ok for r in tr.jobs)
    with pytest.raises(ValueError, match="With the on-chip update the weights are on the chip"):
        run(cnn_train_step(acc, step, w0, x, labels))
    with pytest.raises(ValueError, match="the weights live on the chip"):
        step.weight_writes(w0)
    with pytest.raises(ValueError, match=r"needs hyper=\(lr, momentum, weight_decay\)"):
        step.descriptor_writes()
    with pytest.raises(ValueError, match="state_writes is for an image with update=True"):
        CNNStep(_cnn(), batch, cfg).state_writes(w0)


# Descriptors per job of the reference CNN (8x8 digits): worked out by hand from the tiling
# rule (R_t = min(max_m, max_k), C_t = min(max_m, max_n, max_k)); docs/system.md "CNN steps".
COUNTS = {
    ("tiny", 16): dict(fp0=64, sel0=64, fp1=288, sel1=288, fp2=8, bp2=16, bp1=576, bp0=64),
    ("small", 32): dict(fp0=64, sel0=64, fp1=80, sel1=80, fp2=4, bp2=8, bp1=224, bp0=64),
    ("default", 32): dict(fp0=32, sel0=32, fp1=24, sel1=24, fp2=2, bp2=4, bp1=64, bp0=32),
}


@pytest.mark.parametrize("config,batch", sorted(COUNTS))
def test_cnn_jobs_and_descriptors(config, batch):
    step = CNNStep(_cnn(), batch, get_config(config))
    want = COUNTS[(config, batch)]
    assert step.job_order == list(want)
    assert {name: job.count for name, job in step.jobs.items()} == want
    writes = dict(step.descriptor_writes())
    for name in step.job_order:
        blob = writes[step.jobs[name].desc_base]
        assert len(blob) == DESC_BYTES * want[name]
        pending, tails = None, 0
        for i in range(want[name]):
            d = unpack(blob[i * DESC_BYTES:(i + 1) * DESC_BYTES])
            f = Flag(d["flags"])
            assert bool(f & Flag.CARRY) == (pending is not None)
            if pending is not None:
                assert pending == (d["m"], d["n"])
            pending = (d["m"], d["n"]) if f & Flag.KEEP else None
            if name.startswith("sel"):  # masked chain over the 4 window positions
                assert f & Flag.MASK and d["mask_len"]
                if not f & Flag.KEEP:
                    assert f & (Flag.RELU | Flag.FILTER) == Flag.RELU | Flag.FILTER
                    assert d["out_cap"] and d["filt_cap"]
                    tails += 1
        assert pending is None
        if name.startswith("sel"):
            assert want[name] % (4 * tails) == 0


def test_cnn_step_parameter_errors():
    cfg = get_config("small")
    with pytest.raises(ValueError, match="batch must be a positive multiple of 16, not 24"):
        CNNStep(_cnn(), 24, cfg)
    with pytest.raises(TypeError, match="model must be a golden.nn.Sequential"):
        CNNStep("cnn", 16, cfg)
    with pytest.raises(ValueError, match="Conv2d stages followed by one Linear"):
        CNNStep(train.build_model("mlp", (8, 8), 10), 16, cfg)
    avg = nn.Sequential([nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(256, 10)], (8, 8), 10)
    with pytest.raises(ValueError, match=r"conv2d1: CNNStep supports the post-processing "
                                         r"\['ReLU', 'MaxPool2d', 'Flatten'\]"):
        CNNStep(avg, 16, cfg)
    strided = nn.Sequential([nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)], (8, 8), 10)
    with pytest.raises(ValueError, match="conv2d1: CNNStep supports stride 1 only, not 2"):
        CNNStep(strided, 16, cfg)
    step = CNNStep(_cnn(), 16, cfg)
    with pytest.raises(ValueError, match=r"Unknown threshold key \(2, 'act'\)"):
        step.descriptor_writes({(2, "act"): sparsity.Threshold(1, 1)})
    with pytest.raises(ValueError, match=r"Weights of layer 1 must have shape \(32, 16, 3, 3\)"):
        step.weight_writes([np.zeros((16, 1, 3, 3)), np.zeros((16, 16, 3, 3)),
                            np.zeros((10, 128))])
    with pytest.raises(ValueError, match="Input must hold 16 images of 8x8x1"):
        step.input_writes(np.zeros((16, 64, 2)))
