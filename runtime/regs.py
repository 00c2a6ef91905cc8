"""The job control registers of the accelerator top, defined once (``hdl.regmap``).

The sequencer's CSR block is built from :data:`JOB_REGS`, the driver reads and writes its
fields by name, and ``docs/registers.md`` is generated from it: ``python -m runtime.regs``
(a test checks that the file is up to date).

Protocol (``docs/system.md``, "Job semantics"): the host writes ``dram_size`` once, then per
job ``desc_base`` and ``desc_count`` and ``ctrl.start``. ``status.busy`` is high until the job
ends; then ``status.done`` (success) or ``status.error`` is set (sticky, write 1 to clear),
``err_code`` holds the :class:`golden.jobs.ErrorCode` of the last job (0 on success) and
``err_index`` the failing descriptor (``desc_count`` on success), ``done_count`` the
descriptors completed. A ``start`` while busy is ignored and sets ``status.overrun``.
``irq`` is high while ``irq_enable`` is set and ``status.done`` or ``status.error`` is.

Counters (``cycles`` ... ``filt_filtered_zeros``) restart at each ``start`` and hold the last
job's totals. ``config0``/``config1`` tell the host the engine's limits. The golden model
(:class:`runtime.transport.GoldenTransport`) computes every counter except the timing ones and
``bytes_read`` (:data:`HW_ONLY`), which depend on the hardware's bursts and read 0 there.
"""

from hdl.regmap import Field, Register, RegisterMap

__all__ = ["JOB_REGS", "HW_ONLY", "DOC", "registers_markdown"]

JOB_REGS = RegisterMap("Accelerator job registers", [
    Register("ctrl", 0x00, [Field("start", 1, "w1p", "start the job at desc_base")],
             "control"),
    Register("status", 0x04, [
        Field("busy", 1, "ro", "a job is running"),
        Field("done", 1, "w1c", "the last job succeeded"),
        Field("error", 1, "w1c", "the last job stopped with an error (err_code, err_index)"),
        Field("overrun", 1, "w1c", "a start came while busy (ignored)"),
    ], "job status"),
    Register("desc_base", 0x08, [Field("addr", 32, "rw", "byte address of descriptor 0")],
             "descriptor list"),
    Register("desc_count", 0x0C, [Field("count", 32, "rw", "descriptors in the job")],
             "descriptor count"),
    Register("err_code", 0x10, [Field("code", 8, "ro", "ErrorCode of the last job, 0 = OK")],
             "error code"),
    Register("err_index", 0x14, [Field("index", 32, "ro",
                                       "failing descriptor (desc_count on success)")],
             "error index"),
    Register("dram_size", 0x18, [Field("size", 32, "rw",
                                       "bytes of DRAM the jobs may access, from address 0")],
             "memory bound for the address checks"),
    Register("done_count", 0x1C, [Field("count", 32, "ro",
                                        "descriptors completed by the last job")],
             "progress"),
    Register("irq_enable", 0x20, [Field("enable", 1, "rw",
                                        "drive irq while status.done or status.error is set")],
             "interrupt enable"),
    Register("config0", 0x24, [Field("max_m", 16, "ro", "largest tile m"),
                               Field("max_n", 16, "ro", "largest tile n")],
             "engine configuration"),
    Register("config1", 0x28, [Field("max_kblocks", 16, "ro", "largest tile kblocks"),
                               Field("rows", 8, "ro", "PE rows per lane (R)"),
                               Field("lanes", 8, "ro", "lanes (L)")],
             "engine configuration"),
    Register("cycles", 0x2C, [Field("count", 32, "ro", "clock cycles of the last job")],
             "counter (last job; hardware only)"),
    Register("cycles_fp", 0x30, [Field("count", 32, "ro", "cycles of FP descriptors")],
             "counter (last job; hardware only)"),
    Register("cycles_bp", 0x34, [Field("count", 32, "ro", "cycles of BP descriptors")],
             "counter (last job; hardware only)"),
    Register("cycles_wg", 0x38, [Field("count", 32, "ro", "cycles of WG descriptors")],
             "counter (last job; hardware only)"),
    Register("macs_done_lo", 0x3C, [Field("count", 32, "ro", "MACs with both operands "
                                          "nonzero (sum of macs_nonzero), bits 31:0")],
             "counter (last job)"),
    Register("macs_done_hi", 0x40, [Field("count", 32, "ro", "bits 63:32")],
             "counter (last job)"),
    Register("macs_dense_lo", 0x44, [Field("count", 32, "ro", "MACs of the dense tiles "
                                           "(sum of macs_dense), bits 31:0; skipped = dense "
                                           "- done")],
             "counter (last job)"),
    Register("macs_dense_hi", 0x48, [Field("count", 32, "ro", "bits 63:32")],
             "counter (last job)"),
    Register("bytes_read", 0x4C, [Field("count", 32, "ro", "DRAM bytes read (AXI R beats x "
                                        "bus bytes)")],
             "counter (last job; hardware only)"),
    Register("bytes_written", 0x50, [Field("count", 32, "ro", "DRAM bytes written (strobed "
                                           "bytes of AXI W beats)")],
             "counter (last job)"),
    Register("filt_values", 0x54, [Field("count", 32, "ro", "values the filter saw (sum of "
                                         "the records' values)")],
             "counter (last job)"),
    Register("filt_zeros", 0x58, [Field("count", 32, "ro", "zeros before the filter")],
             "counter (last job)"),
    Register("filt_filtered_zeros", 0x5C, [Field("count", 32, "ro",
                                                 "zeros after the filter")],
             "counter (last job)"),
])

#: counters the golden model does not produce (timing and read traffic); GoldenTransport reads 0
HW_ONLY = ("cycles", "cycles_fp", "cycles_bp", "cycles_wg", "bytes_read")


DOC = "docs/registers.md"  #: where the generated documentation lives (repository-relative)


def registers_markdown() -> str:
    """The text of ``docs/registers.md``: the job registers, then the descriptor layout."""
    from hdl import descriptor

    return (JOB_REGS.markdown("`runtime/regs.py` and `hdl/descriptor.py` by "
                              "`python -m runtime.regs`")
            + "\n## Descriptor (64 bytes, little-endian, `hdl/descriptor.py`)\n\n"
            + descriptor.markdown())


if __name__ == "__main__":
    from pathlib import Path

    out = Path(__file__).resolve().parent.parent / DOC
    out.write_text(registers_markdown())
    print(f"wrote {out}")
