"""The golden demo that `make sim` runs until the RTL top exists."""

import re

import pytest

from golden.__main__ import main


def test_demo_runs_and_filters(capsys):
    assert main(["--batch", "32", "--steps", "4", "--target", "0.8"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^(activations Y|errors dY)\s+\d+\s+([\d.]+)\s+([\d.]+)"
                                 r"\s+.*?\s([\d.]+)\s+8\.5\s+16\.0$", out, re.M)}
    assert set(rows) == {"activations Y", "errors dY"}
    for natural, filtered, hbm_bits in rows.values():
        assert filtered >= natural
        assert filtered > 0.6          # the controller moved toward 0.8
        assert hbm_bits < 8.5           # sparse HBM beats dense BFP8
    for phase in ("FP", "BP", "WG"):
        assert re.search(rf"^{phase}\s+\d+\s+\d+\s+[\d.]+%$", out, re.M)


@pytest.mark.parametrize("args,msg", [(["--target", "1.0"], "--target must be in"),
                                      (["--batch", "20"], "--batch must be a positive multiple"),
                                      (["--steps", "0"], "--steps must be at least 1")])
def test_demo_rejects_bad_arguments(args, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err
