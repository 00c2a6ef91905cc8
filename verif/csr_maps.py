"""A small register map exercising every field type, shared by the CSR tests."""

from hdl.regmap import Field, Register, RegisterMap

TEST_MAP = RegisterMap("Test map", [
    Register("ctrl", 0x00, [Field("start", 1, "w1p", "start a job"),
                            Field("irq_en", 1, "rw", "enable the interrupt"),
                            Field("mode", 3, "rw", "a mode", reset=5)], "control"),
    Register("status", 0x04, [Field("busy", 1, "ro"), Field("code", 4, "ro")]),
    Register("irq", 0x08, [Field("done", 1, "w1c"), Field("err", 1, "w1c")]),
    Register("scratch", 0x0C, [Field("value", 32, "rw", reset=0xDEADBEEF)]),
    Register("counter", 0x14, [Field("value", 32, "ro")]),
])
