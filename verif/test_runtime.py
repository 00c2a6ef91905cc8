"""The host runtime on the golden transport: driver protocol, and MLP training steps whose
every tensor equals golden.train's computation bit for bit."""

import asyncio

import numpy as np
import pytest

from golden import nn, sparsity, train
from golden.jobs import ErrorCode, JobError
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Flag, Op, pack
from runtime.driver import Accelerator, train_step
from runtime.image import MLPStep
from runtime.regs import HW_ONLY, JOB_REGS
from runtime.transport import GoldenTransport, Transport, TransportError


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------- protocol

def _nop_job(tr, base=0x100, count=3):
    tr.dram[base:base + DESC_BYTES * count] = pack(op=Op.NOP) * count
    return base, count


def test_job_registers_map():
    assert [r.name for r in JOB_REGS][:8] == ["ctrl", "status", "desc_base", "desc_count",
                                              "err_code", "err_index", "dram_size",
                                              "done_count"]
    offsets = [r.offset for r in JOB_REGS]
    assert offsets == list(range(0, 4 * len(offsets), 4))  # dense, no overlap
    assert set(HW_ONLY) < {r.name for r in JOB_REGS}
    assert JOB_REGS["status"].pack(busy=1, done=1, error=1, overrun=1) == 0xF
    assert "| `0x018` | `dram_size` |" in JOB_REGS.markdown()


def test_protocol_busy_overrun_and_errors():
    tr = GoldenTransport(get_config("tiny"), 1 << 12, latency=3)
    acc = Accelerator(tr)

    async def body():
        await acc.init(1 << 12)
        base, count = _nop_job(tr)
        await acc.start(base, count)
        st = await acc.read_reg("status")
        assert st["busy"] == 1 and st["done"] == 0
        with pytest.raises(RuntimeError, match="The accelerator is busy"):
            await acc.start(base, count)
        await acc.write_reg("ctrl", start=1)  # a raw start while busy: ignored, overrun set
        status = await acc.wait()
        assert status.ok and (status.index, status.completed) == (3, 3)
        st = await acc.read_reg("status")
        assert (st["busy"], st["done"], st["error"], st["overrun"]) == (0, 1, 0, 1)
        assert len(tr.jobs) == 1
        await acc.write_reg("status", overrun=1)
        assert (await acc.read_reg("status"))["overrun"] == 0
        # an error: descriptor 1 is an UPDATE; the status says so, the next job runs
        tr.dram[base + DESC_BYTES:base + 2 * DESC_BYTES] = pack(op=Op.UPDATE)
        status = await acc.run(type("J", (), dict(desc_base=base, count=count)), check=False)
        assert (status.code, status.index, status.completed) == (ErrorCode.UNSUPPORTED, 1, 1)
        with pytest.raises(JobError, match="UNSUPPORTED at descriptor 1"):
            status.check()
        st = await acc.read_reg("status")
        assert (st["done"], st["error"]) == (0, 1)
        base, count = _nop_job(tr, 0x200, 2)
        status = await acc.run(type("J", (), dict(desc_base=base, count=count)))
        assert status.ok and (await acc.read_reg("status"))["error"] == 0
        # DRAM_SIZE bounds the jobs: descriptors beyond it are BAD_ADDRESS
        await acc.write_reg("dram_size", size=0x200)
        status = await acc.run(type("J", (), dict(desc_base=base, count=count)), check=False)
        assert (status.code, status.index) == (ErrorCode.BAD_ADDRESS, 0)

    run(body())


def test_transport_errors_and_timeout():
    tr = GoldenTransport(get_config("tiny"), 256)

    async def body():
        with pytest.raises(TransportError, match=r"No CSR at 0x400 \(SLVERR\)"):
            await tr.read32(0x400)
        with pytest.raises(TransportError, match="is not a multiple of 4"):
            await tr.write32(0x2, 0)
        with pytest.raises(TransportError, match="outside the 0x100 bytes of memory"):
            await tr.read_mem(250, 8)
        with pytest.raises(ValueError, match=r"CSR value must be an integer in \[0, 2\*\*32\)"):
            await tr.write32(0x8, -1)

    run(body())

    class Stuck(Transport):  # a bus where busy never falls
        async def read32(self, addr):
            return 1

        async def write32(self, addr, value):
            pass

        async def read_mem(self, addr, n):
            return bytes(n)

        async def write_mem(self, addr, data):
            pass

    with pytest.raises(TimeoutError, match="The job did not end within 5 status reads"):
        run(Accelerator(Stuck(), max_polls=5).wait())
    with pytest.raises(TypeError, match="transport must be a Transport, not int"):
        Accelerator(3)
    with pytest.raises(ValueError, match="latency must be a positive integer, not 0"):
        GoldenTransport(get_config("tiny"), 256, latency=0)


def test_image_parameter_errors():
    cfg = get_config("small")
    with pytest.raises(ValueError, match="batch must be a positive multiple of 16, not 20"):
        MLPStep((64, 32, 10), 20, cfg)
    with pytest.raises(ValueError, match=r"hidden sizes must be multiples of 16, not \(30,\)"):
        MLPStep((64, 30, 10), 32, cfg)
    step = MLPStep((64, 32, 10), 32, cfg)
    with pytest.raises(ValueError, match=r"Unknown threshold key \(1, 'act'\)"):
        step.descriptor_writes({(1, "act"): sparsity.Threshold(1, 1)})
    with pytest.raises(ValueError, match=r"Weights of layer 1 must have shape \(10, 32\)"):
        step.weight_writes([np.zeros((32, 64)), np.zeros((32, 10))])


def test_descriptor_chains_of_the_image():
    """Every output tile is a chain: first without CARRY, last without KEEP, shapes equal."""
    step = MLPStep((64, 128, 64, 10), 32, get_config("tiny"))
    (fp_at, fp), (bp_at, bp) = step.descriptor_writes()
    from hdl.descriptor import unpack
    for blob in (fp, bp):
        pending = None
        for i in range(len(blob) // DESC_BYTES):
            d = unpack(blob[i * DESC_BYTES:(i + 1) * DESC_BYTES])
            f = Flag(d["flags"])
            assert bool(f & Flag.CARRY) == (pending is not None)
            if pending is not None:
                assert pending == (d["m"], d["n"])
            pending = (d["m"], d["n"]) if f & Flag.KEEP else None
        assert pending is None
    # WG of the first layer reduces over two row tiles of 16 samples: chains of 2
    assert step.row_tile == step.col_tile == 16


# --------------------------------------------------------------------------- training steps

def _golden_setup(sizes, target, seed):
    model = train.build_model("mlp", (8, 8), sizes[-1], sizes[1:-1])
    model.init(np.random.default_rng(seed))
    c = train._check_config(dict(mode="bfp8-ss", target_sparsity=target,
                                 hidden=sizes[1:-1]))
    interim = train._Interim(c, [layer.name for layer in model.gemm_layers][:-1])
    return model, interim, c


@pytest.mark.parametrize("config,steps", [("small", 3), ("tiny", 2), ("default", 2)])
def test_mlp_training_steps_bit_exact(config, steps, seed):
    sizes, batch = (64, 128, 64, 10), 32
    rng = np.random.default_rng(seed)
    model, interim, c = _golden_setup(sizes, 0.8, seed)
    opt = nn.SGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    # the host's own copies: master weights, optimizer, threshold controllers
    host = train.build_model("mlp", (8, 8), sizes[-1], sizes[1:-1])
    for hl, gl in zip(host.gemm_layers, model.gemm_layers, strict=True):
        hl.w = gl.w.copy()
    host_opt = nn.SGD(host.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    host_ctrl = {key: sparsity.ThresholdController(c["target_sparsity"],
                                                   margin=c["controller_margin"])
                 for key in interim.ctrl}
    step = MLPStep(sizes, batch, get_config(config), error_copies=True)
    tr = GoldenTransport(get_config(config), step.dram_size)
    acc = Accelerator(tr)
    run(acc.init(step.dram_size))
    names = [layer.name for layer in model.gemm_layers]
    L = len(names)
    filtered_something = False

    for _ in range(steps):
        x = rng.random((batch, 64)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        settings = {key: (ctl.threshold, ctl.base) for key, ctl in host_ctrl.items()}
        assert settings == {key: (ctl.threshold, ctl.base) for key, ctl in interim.ctrl.items()}
        # golden.train's step
        nx = nn.Numerics("bfp8")
        nx.trace, nx.macs, interim.trace = [], {}, []
        loss, correct = model.train_step(nx, x, labels, interim, mask_from=c["mask_from"])
        # the accelerator's step
        res = run(train_step(acc, step, [layer.w for layer in host.gemm_layers], x, labels,
                             settings))
        assert (res.loss, res.correct) == (loss, correct)
        gemms = {(r["layer"], r["phase"]): r for r in nx.trace}
        logits = gemms[(names[-1], "fp")]["acc"]
        got = run(acc.read_tensor(step.tensors["logits"]))
        assert np.array_equal(got.mant, logits.mant[:, :10])
        assert np.array_equal(got.exp, logits.exp[:, :10])
        for rec in interim.trace:
            i, kind = rec["key"]
            fwd, saved = ("y", "s") if kind == "act" else ("ye", "e")
            assert run(acc.read_tensor(step.tensors[f"{fwd}{i}"])) == rec["natural"]
            assert run(acc.read_tensor(step.tensors[f"{saved}{i}"])) == rec["stored"]
            thr, base = settings[(i, kind)]
            assert res.stats[(i, kind)] == sparsity.stats(rec["natural"], threshold=thr,
                                                          base=base)
            filtered_something |= res.stats[(i, kind)].filtered_zeros > \
                res.stats[(i, kind)].zeros
        assert len(interim.trace) == 2 * (L - 1)
        for layer, name in enumerate(names):
            wg = gemms[(name, "wg")]["acc"]
            co, k = sizes[layer + 1], sizes[layer]
            got = run(acc.read_tensor(step.tensors[f"dw{layer}"]))
            assert np.array_equal(got.mant, wg.mant[:co, :k])
            assert np.array_equal(got.exp, wg.exp[:co, :k])
            assert np.array_equal(res.grads[layer], model.gemm_layers[layer].grad)
        macs = step.macs(res.records)
        for layer, name in enumerate(names):
            for phase in ("fp", "bp", "wg"):
                if phase == "bp" and layer == 0:
                    assert (layer, phase) not in macs
                    continue
                dense, nonzero = nx.macs[(name, phase)]
                if phase == "bp" and sizes[layer + 1] % 16:  # BP reduces over padded Co
                    dense = dense // sizes[layer + 1] * nn.pad16(sizes[layer + 1])
                assert macs[(layer, phase)] == [dense, nonzero]
        # the host's side of the loop: update, controllers from the accelerator's records
        opt.step()
        for hl, g in zip(host.gemm_layers, res.grads, strict=True):
            hl.grad = g
        host_opt.step()
        for key, ctl in host_ctrl.items():
            ctl.update(res.stats[key])
        for hl, gl in zip(host.gemm_layers, model.gemm_layers, strict=True):
            assert np.array_equal(hl.w, gl.w)
    assert filtered_something  # later steps ran with nonzero thresholds
    assert all(r.ok for r in tr.jobs) and len(tr.jobs) == 2 * steps


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_mlp_steps_with_on_chip_update(config, seed):
    """update=True: the weights never leave the chip; masters, velocities and every step's
    loss equal golden.train with the fixed-point update (golden.update.FixedSGD)."""
    from golden import update

    sizes, batch, steps = (64, 32, 10), 32, 3
    rng = np.random.default_rng(seed)
    model, interim, c = _golden_setup(sizes, 0.8, seed)
    w0 = [layer.w.copy() for layer in model.gemm_layers]
    opt = update.FixedSGD(model.gemm_layers, c["lr"], c["momentum"], c["weight_decay"])
    host_ctrl = {key: sparsity.ThresholdController(c["target_sparsity"],
                                                   margin=c["controller_margin"])
                 for key in interim.ctrl}
    step = MLPStep(sizes, batch, get_config(config), update=True)
    assert not any(name.startswith("dw") for name in step.tensors)
    tr = GoldenTransport(get_config(config), step.dram_size)
    acc = Accelerator(tr)
    run(acc.init(step.dram_size))
    run(acc.load(step.state_writes(w0)))
    hyper = (c["lr"], c["momentum"], c["weight_decay"])
    for _ in range(steps):
        x = rng.random((batch, 64)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        settings = {key: (ctl.threshold, ctl.base) for key, ctl in host_ctrl.items()}
        nx = nn.Numerics("bfp8")
        nx.exact_weights = True
        nx.trace, nx.macs, interim.trace = [], {}, []
        loss, correct = model.train_step(nx, x, labels, interim, mask_from=c["mask_from"])
        res = run(train_step(acc, step, None, x, labels, settings, hyper=hyper))
        assert (res.loss, res.correct) == (loss, correct) and res.grads is None
        opt.step()
        for layer in range(step.layers):
            t = step.tensors[f"st{layer}"]
            tiles = {key: tr.dram[a:a + cap] for key, (a, cap) in t.regions.items()}
            master, velocity = step.read_state(layer, tiles)
            assert np.array_equal(master, opt.master[layer])
            assert np.array_equal(velocity, opt.velocity[layer])
            assert velocity.any()
        for key, ctl in host_ctrl.items():
            ctl.update(res.stats[key])
    with pytest.raises(ValueError, match="With the on-chip update the weights are on the chip"):
        run(train_step(acc, step, w0, x, labels))
    with pytest.raises(ValueError, match=r"needs hyper=\(lr, momentum, weight_decay\)"):
        step.descriptor_writes()


def test_failed_step_reports_and_recovers(seed):
    sizes, batch = (64, 32, 10), 16
    cfg = get_config("small")
    step = MLPStep(sizes, batch, cfg)
    tr = GoldenTransport(cfg, step.dram_size)
    acc = Accelerator(tr)
    run(acc.init(step.dram_size))
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((32, 64)).astype(np.float32),
          rng.standard_normal((10, 32)).astype(np.float32)]
    x = rng.random((batch, 64)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    # corrupt the input stream of tile (0, 0): its first mantissa byte becomes 0
    writes = step.input_writes(x)
    run(acc.load(step.weight_writes(ws) + step.descriptor_writes() + writes))
    addr = writes[0][0]
    tr.dram[addr + 5] = 0  # L1 (2 bytes), block 0's L2 (2) and E (1), then its mantissas
    with pytest.raises(JobError, match="BAD_STREAM at descriptor 0"):
        run(acc.run(step.jobs["fp"]))
    assert tr.jobs[-1].detail.startswith("A: Block 0 mantissa 0 is the byte 0x00")
    res = run(train_step(acc, step, ws, x, labels))  # rewrites the input: the step runs
    assert np.isfinite(res.loss)


def test_registers_doc_is_up_to_date():
    """docs/registers.md is generated from the register map and the descriptor table."""
    from pathlib import Path

    from runtime.regs import DOC, registers_markdown

    path = Path(__file__).resolve().parent.parent / DOC
    assert path.read_text() == registers_markdown(), \
        "docs/registers.md is stale: run python -m runtime.regs"
