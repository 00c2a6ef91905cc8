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
"""

from hdl.regmap import Field, Register, RegisterMap

__all__ = ["JOB_REGS", "DOC", "registers_markdown"]

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
])


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
