"""Descriptor packing (hdl.descriptor): one definition for host and RTL."""

import pytest

from hdl.descriptor import DESC_BYTES, FIELDS, Flag, Op, layout, pack, unpack


def test_pack_unpack_round_trip():
    d = dict(op=Op.GEMM, phase=2, flags=Flag.RELU | Flag.RAW, m=64, n=48, kblocks=16,
             a_addr=0x1000_0000, a_len=0xABCDEF, b_addr=8, out_addr=0xFFFF_FFF8,
             out_cap=(1 << 24) - 1, tau_te=200, tau_tm=255, lr=123456)
    raw = pack(**d)
    assert len(raw) == DESC_BYTES
    got = unpack(raw)
    for k, v in d.items():
        assert got[k] == v
    assert all(got[name] == 0 for name, _, _ in FIELDS if name not in d)


def test_bit_positions_by_hand():
    # op is bits 3:0, phase 5:4, flags 15:6, m 31:16 of the first little-endian word
    raw = pack(op=1, phase=2, flags=0x201, m=0x1234)
    assert int.from_bytes(raw[:4], "little") == 1 | 2 << 4 | 0x201 << 6 | 0x1234 << 16


def test_layout_matches_packing():
    lay = layout()
    raw = pack(m=77, a_addr=0xDEAD_BEE8, tau_tm=9, weight_decay=513)
    view = lay.from_bits(int.from_bytes(raw, "little"))
    assert (int(view.m), int(view.a_addr), int(view.tau_tm), int(view.weight_decay)) == \
        (77, 0xDEAD_BEE8, 9, 513)
    assert lay.size == DESC_BYTES * 8


@pytest.mark.parametrize("kw,msg", [({"m": 1 << 16}, "Descriptor field m = 65536 does not fit "
                                                     "16 bits"),
                                    ({"bogus": 1}, "Unknown descriptor field 'bogus'"),
                                    ({"a_len": -1}, "does not fit 24 bits")])
def test_pack_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        pack(**kw)


def test_unpack_length():
    with pytest.raises(ValueError, match=r"^A descriptor is 64 bytes, not 63$"):
        unpack(bytes(63))
