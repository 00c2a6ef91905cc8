# amaranth: UnusedElaboratable=no
"""Register map model and the AXI4-Lite CSR block (Amaranth simulator and Verilator)."""

import pytest

from hdl.csr import CSRBlock
from hdl.regmap import Field, Register, RegisterMap
from verif.csr_maps import TEST_MAP
from verif.harness import run_cocotb


def test_field_validation():
    with pytest.raises(ValueError, match=r"^Field name must be a lower-case identifier, not 'X'$"):
        Field("X", 1, "rw")
    with pytest.raises(ValueError, match=r"^Field a: width must be 1 to 32, not 33$"):
        Field("a", 33, "rw")
    with pytest.raises(ValueError, match=r"^Field a: access must be one of rw, ro, w1p, w1c, "
                                         r"not 'wo'$"):
        Field("a", 1, "wo")
    with pytest.raises(ValueError, match=r"^Field a: w1p fields are 1 bit wide$"):
        Field("a", 2, "w1p")
    with pytest.raises(ValueError, match=r"^Field a: reset 4 does not fit 2 bits$"):
        Field("a", 2, "rw", reset=4)


def test_register_and_map_validation():
    with pytest.raises(ValueError, match=r"^Register r: offset must be a non-negative multiple "
                                         r"of 4, not 2$"):
        Register("r", 2, [Field("a", 1, "rw")])
    with pytest.raises(ValueError, match=r"^Register r: fields take 33 bits, more than 32$"):
        Register("r", 0, [Field("a", 32, "rw"), Field("b", 1, "rw")])
    with pytest.raises(ValueError, match=r"^Registers a and b share offset 0x4$"):
        RegisterMap("m", [Register("a", 4, [Field("x", 1, "rw")]),
                          Register("b", 4, [Field("x", 1, "rw")])])
    with pytest.raises(ValueError, match=r"^Address width must be an integer of at least 5"):
        CSRBlock(TEST_MAP, addr_width=3)


def test_pack_unpack():
    r = TEST_MAP["ctrl"]
    assert r.pack(start=1, irq_en=0, mode=6) == 0b110_0_1
    assert r.unpack(0b011_1_0) == {"start": 0, "irq_en": 1, "mode": 3}
    assert r.reset == 5 << 2
    with pytest.raises(ValueError, match=r"^ctrl.mode: 8 does not fit 3 bits$"):
        r.pack(mode=8)


def test_markdown_lists_every_field():
    text = TEST_MAP.markdown()
    for r in TEST_MAP:
        for f in r.fields:
            assert f"`{f.name}`" in text
    assert "| `0x014` | `counter` | 31:0 |" in text


@pytest.mark.cocotb
def test_csr_verilator():
    run_cocotb(CSRBlock(TEST_MAP), name="csr_test", test_module="verif.cocotb.csr_tb",
               test_id="csr_test")
