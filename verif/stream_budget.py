"""Helpers for operand streams read inside a byte budget (``golden.jobs.read_stream``).

Shared by the decoder's tests and benches and the reader -> decoder test.
"""

import re

import golden.jobs
from hdl.hbm_decoder import DECODER_CMD
from verif.streams import _GOLDEN_ERRORS

__all__ = ["decoder_cmd_word", "golden_budget"]


def decoder_cmd_word(n_blocks: int, budget: bool = False) -> int:
    """An :class:`hdl.hbm_decoder.HBMDecoder` ``cmd`` payload as an integer (layout offsets)."""
    return ((n_blocks << DECODER_CMD["blocks"].offset)
            | (int(budget) << DECODER_CMD["budget"].offset))


def golden_budget(data: bytes, n_blocks: int):
    """``golden.jobs.read_stream`` with its verdict as a DecodeError name.

    Returns ``(name, exponents, mantissas (n, 16), length)``; all but the name are None on an
    error. An unknown error message fails the test.
    """
    try:
        e, m, end = golden.jobs.read_stream(data, n_blocks)
    except ValueError as exc:
        for pattern, name in _GOLDEN_ERRORS:
            if re.search(pattern, str(exc)):
                return name, None, None, None
        raise AssertionError(f"unclassified golden error: {exc}") from exc
    return "NONE", e, m.reshape(-1, 16), end
