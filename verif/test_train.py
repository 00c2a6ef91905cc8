"""Golden training (golden/train.py): it learns, its JSON is complete and consistent, it is
deterministic under a seed, its --dump vectors replay bit-exactly, and bad options fail clearly.
"""

import json

import numpy as np
import pytest

from golden import gemm, hbm, sparsity, train
from golden.bfp import BFPTensor


@pytest.fixture(scope="module")
def ss_run():
    """One short bfp8-ss MLP run on digits (shared by several tests)."""
    return train.train(dict(mode="bfp8-ss", epochs=3, seed=3))


def test_mlp_learns_and_reaches_the_target_sparsity(ss_run):
    r = ss_run
    assert r["test_accuracy"] > 0.85  # chance is 0.1
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]
    # the filter is steering: close to the target and well above what the tensors hold alone
    assert 0.85 <= r["interim_sparsity"] <= 0.95
    assert r["interim_sparsity"] > r["natural_sparsity"] + 0.05


def test_cnn_learns_in_every_mode():
    for mode in ("fp32", "bfp8", "bfp8-ss"):
        r = train.train(dict(model="cnn", mode=mode, epochs=2, seed=1, limit_train=480,
                             limit_test=200, lr=0.1))
        assert r["test_accuracy"] > 0.6, mode
        names = [layer["name"] for layer in r["layers"]]
        assert names == ["conv2d1", "conv2d2", "linear1"]


def _mlp_dense_macs(n):
    """FP, BP and WG MACs of the 64-128-64-10 MLP for n samples (no BP into the input)."""
    fp = 64 * 128 + 128 * 64 + 64 * 10
    bp = 128 * 64 + 64 * 10
    return n * (2 * fp + bp)


def test_json_keys_and_consistency(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert train.main(["--mode", "bfp8-ss", "--epochs", "2", "--seed", "5", "--json", str(out),
                       "--limit-train", "320", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    for key in ("test_accuracy", "interim_sparsity", "macs", "dram_bytes", "layers", "tensors",
                "history", "config"):
        assert key in r
    assert 0 <= r["test_accuracy"] <= 1
    assert r["test_accuracy"] == r["history"][-1]["test_accuracy"]
    assert len(r["history"]) == 2
    m = r["macs"]
    assert m["dense"] == _mlp_dense_macs(320)
    assert 0 < m["nonzero"] < m["dense"]
    assert m["dense"] == sum(p["dense"] for p in m["by_phase"].values())
    assert m["nonzero"] == sum(v["nonzero"] for layer in r["layers"]
                               for v in layer["macs"].values())
    d = r["dram_bytes"]
    n_interim = 320 * (128 + 64) * 2  # activations and errors of the two hidden layers
    assert d["fp16_dense"] == 2 * n_interim
    assert d["bfp8_dense"] == n_interim * 17 // 16
    assert 0 < d["hbm"] < d["bfp8_dense"]
    assert d["hbm"] == sum(t["dram_bytes"]["hbm"] for t in r["tensors"])
    # interim_sparsity is the element-weighted mean over the tensors it names
    ts = [t for t in r["tensors"] if t["in_interim_sparsity"]]
    assert {t["name"] for t in ts} == {"linear1.act", "linear1.err", "linear2.act",
                                       "linear2.err"}
    mean = sum(t["sparsity"] * t["elements"] for t in ts) / sum(t["elements"] for t in ts)
    assert r["interim_sparsity"] == pytest.approx(mean, abs=1e-12)
    for t in ts:
        assert t["filter"] and t["sparsity"] >= t["natural_sparsity"]
        assert t["elements"] == 320 * (128 if t["layer"] == "linear1" else 64)


def test_fp32_and_bfp8_report_natural_sparsity():
    for mode in ("fp32", "bfp8"):
        r = train.train(dict(mode=mode, epochs=1, limit_train=160, seed=2))
        assert r["interim_sparsity"] == r["natural_sparsity"]
        assert 0.2 < r["interim_sparsity"] < 0.8  # ReLU zeros, about half
        assert all(not t["filter"] and t["tau_mean"] == 0 for t in r["tensors"])


def test_deterministic_under_a_seed():
    cfg = dict(mode="bfp8-ss", epochs=1, limit_train=192, seed=11)
    a, b = train.train(cfg), train.train(cfg)
    c = train.train(dict(cfg, seed=12))
    for r in (a, b, c):
        r.pop("seconds")
        for h in r["history"]:
            h.pop("seconds")
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)


def test_dump_replays_bit_exactly(tmp_path):
    d = tmp_path / "dump"
    r = train.train(dict(mode="bfp8-ss", epochs=2, limit_train=64, seed=4), dump_dir=d)
    man = json.loads((d / "manifest.json").read_text())
    assert man["step"] == 2  # first step of the last epoch (2 steps per epoch)
    phases = [(g["layer"], g["phase"]) for g in man["gemms"]]
    assert phases.count(("linear1", "fp")) == 1 and ("linear1", "bp") not in phases
    assert {("linear2", "bp"), ("linear3", "wg")} <= set(phases)
    for g in man["gemms"]:
        z = np.load(d / g["file"])
        a = BFPTensor(z["a_exponents"], z["a_mantissas"])
        b = BFPTensor(z["b_exponents"], z["b_mantissas"])
        mask = z["out_mask"] if g["masked"] else None
        acc = gemm.matmul(a, b, out_mask=mask)
        assert np.array_equal(acc.mant, z["acc_mant"]) and np.array_equal(acc.exp, z["acc_exp"])
    assert len(man["interim"]) == 4
    for t in man["interim"]:
        z = np.load(d / t["file"])
        nat = BFPTensor(z["natural_exponents"], z["natural_mantissas"])
        stored = BFPTensor(z["stored_exponents"], z["stored_mantissas"])
        tau = sparsity.Threshold(t["tau"]["te"], t["tau"]["tm"])
        assert sparsity.filter(nat, tau) == stored
        assert hbm.decode_tensor((d / t["hbm"]).read_bytes(), t["shape"]) == stored
    inputs = np.load(d / "step_inputs.npz")
    assert inputs["images"].shape == (32, 8, 8) and inputs["w_linear1"].shape == (128, 64)
    assert r["config"]["mode"] == "bfp8-ss"


def test_progress_lines(capsys):
    train.train(dict(mode="fp32", epochs=2, limit_train=64), progress=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("epoch 1/2 ") and "test " in err[1]


def test_option_errors(tmp_path, capsys):
    assert train.main(["--dataset", "idx", "--quiet"]) == 2
    assert "error: The idx data set needs a data directory (--data-dir DIR)" in \
        capsys.readouterr().err
    assert train.main(["--dataset", "idx", "--data-dir", str(tmp_path), "--quiet"]) == 2
    assert "IDX data set file missing: neither train-images-idx3-ubyte nor " \
           "train-images-idx3-ubyte.gz" in capsys.readouterr().err
    assert train.main(["--mode", "fp32", "--dump", str(tmp_path), "--epochs", "1"]) == 2
    assert "--dump writes BFP8 vectors: use mode bfp8 or bfp8-ss" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--mode", "fp16"])
    bad = [(dict(epochs=0), "epochs must be a positive integer, not 0"),
           (dict(target_sparsity=1.0), r"target_sparsity must be in \[0, 1\), not 1.0"),
           (dict(target_sparsity=0.999, controller_margin=0.004),
            r"controller_margin must be >= 0 with target_sparsity \+ margin < 1, not 0.004"),
           (dict(filter_at=("fwd", "act")), "filter_at must be a non-empty set of"),
           (dict(filter_at=()), "filter_at must be a non-empty set of"),
           (dict(hidden=(100,)), "hidden sizes must be positive multiples of 16"),
           (dict(mask_from="x"), "mask_from must be 'saved' or 'forward', not 'x'"),
           (dict(lr=-0.1), "lr must be a number >= 0, not -0.1"),
           (dict(seed=-1), "seed must be a non-negative integer, not -1"),
           (dict(nope=1), r"Unknown training options: \['nope'\]")]
    for cfg, msg in bad:
        with pytest.raises(ValueError, match=msg):
            train.train(cfg)
    with pytest.raises(ValueError, match=r"dump_step must be an integer in \[0, 2\), not 2"):
        train.train(dict(epochs=1, limit_train=64), dump_dir=tmp_path, dump_step=2)


def test_report_from_small_runs(tmp_path):
    """The report generator on real (tiny) runs: tables, target checks and both plots."""
    from golden import train_report

    runs = [dict(model="mlp", mode=m, epochs=1, seed=s, limit_train=64)
            for m in ("fp32", "bfp8") for s in (0, 1)]
    runs += [dict(model="mlp", mode="bfp8-ss", epochs=1, seed=s, limit_train=64,
                  target_sparsity=t, filter_at=train.DEFAULT_FILTER_AT,
                  mask_from=train.DEFAULTS["mask_from"]) for s in (0, 1) for t in (0.5, 0.9)]
    results = {train_report._key(c): train.train(c) for c in runs}
    assert len(results) == len(runs)  # the cache keys tell every run apart
    out = tmp_path / "training.md"
    md = train_report.write_report(results, runs, quick=True, out=out)
    assert out.read_text() == md
    assert (tmp_path / "training_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "training_sparsity.png").stat().st_size > 1000
    assert "| mlp | bfp8-ss (target 0.9) |" in md
    assert "| mlp | bfp8 within 1 point of fp32 |" in md
    assert "| mlp | 0.50 |" in md and "| mlp | 0.90 |" in md
    assert "Quick mode" in md
    full = train_report.plan()
    assert len(full) == len({train_report._key(c) for c in full}) == 90
