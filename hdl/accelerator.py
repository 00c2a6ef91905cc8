"""The accelerator top: CSRs, descriptor sequencer, DMA, HBM decoder, engine and output path.

``Accelerator`` is the training processor a host drives (``docs/system.md``): an AXI4-Lite
CSR subordinate (``csr``, the registers of :data:`runtime.regs.JOB_REGS`), one AXI4 manager
port to DRAM (``mem``) and an interrupt line (``irq``). A job is a list of 64-byte
descriptors (:mod:`hdl.descriptor`) that the sequencer fetches and runs one after the other,
exactly as the reference executor :func:`golden.jobs.execute` does (its module docstring is
the specification; ``verif/test_accelerator.py`` runs both on the same DRAM image)::

    csr (AXI4-Lite) ─► CSRBlock ─► sequencer FSM ─────────────────────────────┐
                                        │ commands                              │ counters,
    mem (AXI4) ◄─ AXI4Arbiter ◄─ DMAReader ─► descriptor capture              │ status
                       ▲            └──► HBMDecoder ─► [Transposer] ─► row limit
                       │                                 ├─► BlockAdapter A ─► engine a_in
                       │                                 ├─► BlockAdapter B ─► engine b_in
                       │                                 └─► MaskAdapter   ─► engine om_in
                       │     engine o ─► OutputPath (C buffer; carry port ◄─► engine)
                       ├─ DMAWriter (forward copy, RAW, statistics record) ◄─ o_fwd / record
                       └─ DMAWriter (filtered copy) ◄─ o_filt

Per GEMM descriptor the sequencer: fetches it (8 beats), checks it in the order of
``golden.jobs`` (op, shape, chain, output, addresses: before any data access), clears the
engine's buffers, loads A, B and (``MASK``) the mask stream one after the other through the
decoder in *budget* mode (the reader stops once the decoder has the stream's last block),
runs the engine (``CARRY``: from the output path's buffer), drains the output path into the
writers unless ``KEEP``, and writes the 176-byte statistics record through the forward writer.

Errors end the job with ``err_code`` / ``err_index`` and ``status.error`` (and ``irq`` when
enabled); the DMA transfers in progress run to their end (their data are dropped), the data
path (decoder, transposer, adapters, engine, output path) is reset, and the next ``start``
runs normally. ``ErrorCode.INTERNAL`` marks a unit reporting an error for a descriptor that
passed the checks and whose streams decoded (never expected; a design bug).

Counters restart at ``start``: cycles (job, and per phase: a descriptor's cycles from its fetch
to its end go to its phase), MACs done and dense (from the records), DRAM bytes read and
written (at the AXI port), and the filter counters of the job's HBM drains.
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.jobs import ALIGN, STATS_BYTES, ErrorCode
from runtime.regs import JOB_REGS

from .axi import AXI4LiteSignature, AXI4Signature
from .axi_arbiter import AXI4Arbiter
from .bfp_layouts import BLOCK
from .block_adapter import BlockAdapter, MaskAdapter
from .config import EngineConfig
from .csr import CSRBlock
from .descriptor import DESC_BYTES, Flag, Op, Phase, layout
from .dma import DMAError, DMAReader, DMAWriter
from .engine import Engine, check_carry_bram_lanes
from .engine import Op as EngineOp
from .engine_lane import check_align_share, widths
from .engine_load import Status as EngineStatus
from .hbm_decoder import HBMDecoder
from .output_path import Op as PathOp
from .output_path import OutputPath, check_drain_lanes
from .output_path import Status as PathStatus
from .sparsity_filter import HIST_BINS
from .transposer import Transposer
from .update_path import UpdatePath

__all__ = ["Accelerator", "CSR_ADDR_W", "ADDR_W", "DATA_W"]

CSR_ADDR_W = 12  #: CSR window: 4 KiB
ADDR_W = 32  #: DRAM byte addresses
DATA_W = 64  #: AXI data width: ALIGN bytes
assert DATA_W // 8 == ALIGN

_KNOWN_FLAGS = int(Flag.RELU | Flag.FILTER | Flag.MASK | Flag.A_REBLOCK | Flag.B_REBLOCK
                   | Flag.CARRY | Flag.KEEP | Flag.RAW | Flag.UPDATE)
_NOT_WITH_UPDATE = int(Flag.RELU | Flag.FILTER | Flag.MASK | Flag.KEEP | Flag.RAW)
_STATE_BYTES = 8  # golden.jobs.STATE_RECORD_BYTES
_STATS_BEATS = STATS_BYTES // ALIGN
_DESC_BEATS = DESC_BYTES // ALIGN


def _cdiv16(x):
    return (x + BLOCK - 1) >> 4


class Accelerator(wiring.Component):
    """The accelerator top (module docstring).

    Parameters
    ----------
    cfg : EngineConfig
        Engine configuration (:data:`hdl.config.CONFIGS`).
    max_burst : int
        AXI burst length of the DMA engines, in beats (power of two, 2 to 256).
    max_outstanding : int
        Read bursts in flight (1 to 16).
    decoder_fifo : int
        Input queue of the HBM decoder, in beats.
    drain_lanes : int
        Values per cycle of the output path's BFP8 converter, sparsity filter and HBM encoders:
        16 (one block per cycle) or 8, 4, 2, 1 to save area on an FPGA (the board tops); the
        results are identical, a drain takes up to ``16 // drain_lanes`` times as long.
    load_lanes : int
        Values per cycle of the HBM decoder and of the transposer (their ``lanes``), likewise:
        a nonzero block every ``16 // load_lanes`` cycles, a re-blocked load a block every
        ``16 // load_lanes`` cycles in and out.
    carry_bram_lanes : int
        Engine lanes (0 to ``cfg.lanes``) whose K-segment carry queue is in block RAM rather
        than distributed RAM (:class:`~hdl.engine.Engine`): an FPGA area trade with the same
        results and cycles.
    align_share : int
        PEs per align unit in the engine's lanes (:class:`~hdl.engine.Engine`; a power of
        two from 1 to R): an FPGA area trade with the same results, sparse blocks cost more
        cycles.

    Attributes
    ----------
    csr : In(AXI4LiteSignature(CSR_ADDR_W, 32))
        The host's register port (:data:`runtime.regs.JOB_REGS`).
    mem : Out(AXI4Signature(ADDR_W, DATA_W))
        DRAM.
    irq : Out(1)
        ``irq_enable`` and (``status.done`` or ``status.error``).
    """

    def __init__(self, cfg: EngineConfig, *, max_burst: int = 16, max_outstanding: int = 4,
                 decoder_fifo: int = 256, drain_lanes: int = 16, load_lanes: int = 16,
                 carry_bram_lanes: int = 0, align_share: int = 1):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True  # never elaborated
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        # the units validate these; build them here so that a bad value fails at construction
        try:
            DMAReader(ADDR_W, DATA_W, max_burst, max_outstanding)._MustUse__silence = True
            HBMDecoder(DATA_W, decoder_fifo, lanes=load_lanes)._MustUse__silence = True
            check_drain_lanes(drain_lanes)
            check_carry_bram_lanes(carry_bram_lanes, cfg)
            check_align_share(align_share, cfg)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never elaborated
            raise
        self._cfg = cfg
        self._max_burst = max_burst
        self._max_outstanding = max_outstanding
        self._decoder_fifo = decoder_fifo
        self._drain_lanes = drain_lanes
        self._load_lanes = load_lanes
        self._carry_bram_lanes = carry_bram_lanes
        self._align_share = align_share
        super().__init__({
            "csr": In(AXI4LiteSignature(CSR_ADDR_W, 32)),
            "mem": Out(AXI4Signature(ADDR_W, DATA_W)),
            "irq": Out(1),
        })

    @property
    def cfg(self) -> EngineConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = widths(cfg)
        R = cfg.rows
        max_kb = cfg.k_blocks
        max_cb = -(-max(cfg.max_m, cfg.max_n) // BLOCK)

        # ---- units -----------------------------------------------------------------------
        csr = m.submodules.csr = CSRBlock(JOB_REGS, CSR_ADDR_W)
        wiring.connect(m, wiring.flipped(self.csr), csr.bus)

        rd = m.submodules.reader = DMAReader(ADDR_W, DATA_W, self._max_burst,
                                             self._max_outstanding)
        wf = m.submodules.writer_fwd = DMAWriter(ADDR_W, DATA_W, self._max_burst)
        ws = m.submodules.writer_filt = DMAWriter(ADDR_W, DATA_W, self._max_burst)
        arb = m.submodules.arbiter = AXI4Arbiter(3, ADDR_W, DATA_W,
                                                  max_outstanding=self._max_outstanding + 4)
        wiring.connect(m, rd.axi, arb.s[0])
        wiring.connect(m, wf.axi, arb.s[1])
        wiring.connect(m, ws.axi, arb.s[2])
        wiring.connect(m, arb.m, wiring.flipped(self.mem))

        dp_rst = Signal()  # data path reset after an error
        rst = ResetInserter(dp_rst)
        dec = HBMDecoder(DATA_W, self._decoder_fifo, lanes=self._load_lanes)
        tp = Transposer(cfg.max_k, max_cb, lanes=self._load_lanes)
        ad_a = BlockAdapter(w["m"], w["kb"])
        ad_b = BlockAdapter(w["n"], w["kb"])
        ad_m = MaskAdapter(w["m"], w["g"], R)
        eng = Engine(cfg, carry_bram_lanes=self._carry_bram_lanes,
                     align_share=self._align_share)
        op = OutputPath(cfg, DATA_W, drain_lanes=self._drain_lanes)
        upd = UpdatePath(cfg)
        m.submodules.update_path = rst(upd)
        m.submodules.decoder = rst(dec)
        m.submodules.transposer = rst(tp)
        m.submodules.adapter_a = rst(ad_a)
        m.submodules.adapter_b = rst(ad_b)
        m.submodules.adapter_mask = rst(ad_m)
        m.submodules.engine = rst(eng)
        m.submodules.output_path = rst(op)
        wiring.connect(m, ad_a.o, eng.a_in)
        wiring.connect(m, ad_b.o, eng.b_in)
        wiring.connect(m, ad_m.o, eng.om_in)
        upd_active = Signal()  # the update path owns the carry port and the C buffer input
        ws_state = Signal()  # the filtered-copy writer takes the update path's state beats
        with m.If(upd_active):
            wiring.connect(m, upd.o, op.i)
            m.d.comb += [op.carry_en.eq(upd.carry_en), op.carry_addr.eq(upd.carry_addr)]
        with m.Else():
            wiring.connect(m, eng.o, op.i)
            m.d.comb += [op.carry_en.eq(eng.carry_en), op.carry_addr.eq(eng.carry_addr)]
        m.d.comb += [
            eng.carry_data.eq(op.carry_data),
            upd.carry_data.eq(op.carry_data),
            eng.carry_ready.eq(op.carry_ready),
        ]
        with m.If(ws_state):
            wiring.connect(m, upd.state_out, ws.inp)
        with m.Else():
            wiring.connect(m, op.o_filt, ws.inp)

        # ---- CSR side --------------------------------------------------------------------
        busy = Signal()
        m.d.comb += [
            csr.status_busy.eq(busy),
            csr.status_overrun_set.eq(csr.ctrl_start & busy),
            csr.config0_max_m.eq(cfg.max_m),
            csr.config0_max_n.eq(cfg.max_n),
            csr.config1_max_kblocks.eq(max_kb),
            csr.config1_rows.eq(R),
            csr.config1_lanes.eq(cfg.lanes),
            self.irq.eq(csr.irq_enable_enable & (csr.status_done | csr.status_error)),
        ]
        err_code = Signal(8)
        err_index = Signal(32)
        done_count = Signal(32)
        m.d.comb += [csr.err_code_code.eq(err_code), csr.err_index_index.eq(err_index),
                     csr.done_count_count.eq(done_count)]

        # counters of the job: reset-less, zeroed by a start and in the cycle after a reset
        # (one synchronous reset per flip-flop on an FPGA: a domain reset beside the start's
        # zeroing would cost a LUT per bit)
        c_cycles = Signal(32, reset_less=True)
        c_phase = Signal(data.ArrayLayout(32, 3), reset_less=True)
        c_macs = Signal(64, reset_less=True)
        c_dense = Signal(64, reset_less=True)
        c_rbytes = Signal(32, reset_less=True)
        c_wbytes = Signal(32, reset_less=True)
        c_vals = Signal(32, reset_less=True)
        c_zeros = Signal(32, reset_less=True)
        c_fzeros = Signal(32, reset_less=True)
        counters = [c_cycles, c_phase, c_macs, c_dense, c_rbytes, c_wbytes, c_vals, c_zeros,
                    c_fzeros]
        clear_counters = Signal()
        after_rst = Signal(init=1)
        m.d.sync += after_rst.eq(0)
        m.d.comb += [
            csr.cycles_count.eq(c_cycles),
            csr.cycles_fp_count.eq(c_phase[Phase.FP]),
            csr.cycles_bp_count.eq(c_phase[Phase.BP]),
            csr.cycles_wg_count.eq(c_phase[Phase.WG]),
            csr.macs_done_lo_count.eq(c_macs[:32]),
            csr.macs_done_hi_count.eq(c_macs[32:]),
            csr.macs_dense_lo_count.eq(c_dense[:32]),
            csr.macs_dense_hi_count.eq(c_dense[32:]),
            csr.bytes_read_count.eq(c_rbytes),
            csr.bytes_written_count.eq(c_wbytes),
            csr.filt_values_count.eq(c_vals),
            csr.filt_zeros_count.eq(c_zeros),
            csr.filt_filtered_zeros_count.eq(c_fzeros),
        ]
        bus = self.mem
        with m.If(busy):
            m.d.sync += c_cycles.eq(c_cycles + 1)
            with m.If(bus.rvalid & bus.rready):
                m.d.sync += c_rbytes.eq(c_rbytes + ALIGN)
            with m.If(bus.wvalid & bus.wready):
                m.d.sync += c_wbytes.eq(c_wbytes + sum(bus.wstrb[b] for b in range(ALIGN)))

        # ---- job registers ---------------------------------------------------------------
        base = Signal(32)
        count = Signal(32)
        dram = Signal(32)
        idx = Signal(32)
        dptr = Signal(33 + 6)  # byte address of descriptor idx
        desc = Signal(layout())
        pend = Signal()  # a KEEP tile is pending
        pend_idx = Signal(32)
        pend_m = Signal(16)
        pend_n = Signal(16)
        dcyc = Signal(32)  # cycles of the current descriptor
        m.d.sync += dcyc.eq(dcyc + 1)

        d = desc
        flags = d.flags
        f_relu, f_filter, f_mask = flags[0], flags[1], flags[2]
        f_arb, f_brb, f_carry, f_keep, f_raw = flags[3], flags[4], flags[5], flags[6], flags[7]
        f_upd = flags[8]
        f_out = ~f_keep & (d.out_cap != 0)
        f_filt = ~f_keep & ~f_raw & (d.filt_cap != 0)
        dm = d.m[:w["m"] + 1]
        dn = d.n[:w["n"] + 1]
        dkb = d.kblocks[:w["kb"] + 1]
        cb_m = Signal(w["m"] + 1)
        cb_n = Signal(w["n"] + 1)
        m.d.comb += [cb_m.eq(_cdiv16(dm)), cb_n.eq(_cdiv16(dn))]

        # ---- checks (golden.jobs order) --------------------------------------------------
        def region(addr, length, cap=False):
            bad = (addr[:3] != 0) | (length == 0) | (addr + length > dram)
            if cap:
                bad = bad | (length[:3] != 0)
            return bad

        chk_code = Signal(8)
        chk_nop = Signal()
        reserved = (d.reserved0 != 0) | (d.reserved1 != 0) | (d.reserved != 0)
        bad_shape = ((d.m == 0) | (d.m > cfg.max_m) | (d.n == 0) | (d.n > cfg.max_n)
                     | (d.kblocks == 0) | (d.kblocks > max_kb))
        bad_chain = Mux(f_carry, ~pend | (pend_m != d.m) | (pend_n != d.n), pend)
        bad_addr = (region(d.a_addr, d.a_len) | region(d.b_addr, d.b_len)
                    | (f_mask & region(d.mask_addr, d.mask_len))
                    | (f_upd & (region(d.mask_addr, d.mask_len, cap=True)
                                | (d.mask_len != dm * dn * _STATE_BYTES)))
                    | (f_out & region(d.out_addr, d.out_cap, cap=True))
                    | (f_filt & region(d.filt_addr, d.filt_cap, cap=True))
                    | ((d.stats_addr != 0) & region(d.stats_addr, Const(STATS_BYTES, 8))))
        with m.If(reserved | (d.op > Op.UPDATE)):
            m.d.comb += chk_code.eq(ErrorCode.BAD_OP)
        with m.Elif(d.op == Op.NOP):
            m.d.comb += chk_nop.eq(1)
        with m.Elif(d.op == Op.UPDATE):
            m.d.comb += chk_code.eq(ErrorCode.UNSUPPORTED)
        with m.Elif((d.phase > Phase.WG) | ((flags & ~_KNOWN_FLAGS) != 0)
                    | (f_upd & ((flags & _NOT_WITH_UPDATE) != 0))):
            m.d.comb += chk_code.eq(ErrorCode.BAD_OP)
        with m.Elif(bad_shape | (f_upd & ((d.n > cfg.max_m) | (d.m > cfg.max_n)))):
            m.d.comb += chk_code.eq(ErrorCode.BAD_SHAPE)
        with m.Elif(bad_chain):
            m.d.comb += chk_code.eq(ErrorCode.BAD_CHAIN)
        with m.Elif(~f_keep & ~f_out & ~f_filt & ~f_upd):
            m.d.comb += chk_code.eq(ErrorCode.NO_OUTPUT)
        with m.Elif(bad_addr):
            m.d.comb += chk_code.eq(ErrorCode.BAD_ADDRESS)

        # ---- read path steering ----------------------------------------------------------
        # route of the reader's beats: 0 = descriptor capture, 1 = decoder, 2 = sink,
        # 3 = the update path's state input
        route = Signal(2)
        beat = Signal(range(_DESC_BEATS + 1))
        with m.Switch(route):
            with m.Case(0):
                m.d.comb += rd.out.ready.eq(1)
                with m.If(rd.out.valid & (beat < _DESC_BEATS)):
                    m.d.sync += [desc.as_value().word_select(beat, DATA_W).eq(rd.out.payload.data),
                                 beat.eq(beat + 1)]
            with m.Case(1):
                wiring.connect(m, rd.out, dec.i)
            with m.Case(3):
                wiring.connect(m, rd.out, upd.state_in)
            with m.Default():
                m.d.comb += rd.out.ready.eq(1)
        m.d.comb += rd.stop.eq((route == 1) & (dec.tail | dec.error))

        # load parameters
        ld_target = Signal(2)  # 0 = A, 1 = B, 2 = mask
        ld_reblock = Signal()
        ld_kblocks = Signal(16)  # blocks per row after the transposer (row limit, adapters)
        ld_limit = Signal(16)  # rows passed on
        ld_rows = Signal(range(cfg.max_k + 1))  # transposer rows
        ld_cblocks = Signal(range(max_cb + 1))  # transposer column blocks
        ld_start = Signal()
        m.d.comb += [
            tp.rows.eq(ld_rows), tp.cblocks.eq(ld_cblocks),
            tp.start.eq(ld_start & ld_reblock),
            ad_a.kblocks.eq(ld_kblocks), ad_b.kblocks.eq(ld_kblocks),
            ad_m.kblocks.eq(ld_kblocks),
            ad_a.start.eq(ld_start), ad_b.start.eq(ld_start), ad_m.start.eq(ld_start),
        ]
        # decoder -> (transposer) -> row limit -> adapter
        src_valid, src_ready = Signal(), Signal()
        src = Signal.like(dec.o.payload)
        with m.If(ld_reblock):
            wiring.connect(m, dec.o, tp.i)
            m.d.comb += [src_valid.eq(tp.o.valid), src.eq(tp.o.payload),
                         tp.o.ready.eq(src_ready)]
        with m.Else():
            m.d.comb += [src_valid.eq(dec.o.valid), src.eq(dec.o.payload),
                         dec.o.ready.eq(src_ready)]
        rl_row = Signal(16)
        rl_kb = Signal(16)
        keep_row = Signal()
        dst_ready = Signal()
        m.d.comb += [keep_row.eq(rl_row < ld_limit),
                     src_ready.eq(Mux(keep_row, dst_ready, 1))]
        with m.If(ld_start):
            m.d.sync += [rl_row.eq(0), rl_kb.eq(0)]
        with m.Elif(src_valid & src_ready):
            with m.If(rl_kb + 1 >= ld_kblocks):
                m.d.sync += [rl_kb.eq(0), rl_row.eq(rl_row + 1)]
            with m.Else():
                m.d.sync += rl_kb.eq(rl_kb + 1)
        for n, ad in enumerate((ad_a, ad_b, ad_m)):
            sel = ld_target == n
            m.d.comb += [ad.i.valid.eq(sel & src_valid & keep_row), ad.i.payload.eq(src)]
            with m.If(sel):
                m.d.comb += dst_ready.eq(ad.i.ready)
        load_idle = ~(dec.busy | tp.busy | dec.o.valid | tp.o.valid | ad_a.o.valid
                      | ad_b.o.valid | ad_m.o.valid)

        # ---- statistics record -----------------------------------------------------------
        r_valid = Signal()  # the record's filter counters are valid (an HBM drain)
        r_out = Signal(32)
        r_filt = Signal(32)
        r_macs = Signal(32)
        r_dense = Signal(64)
        te_applied = Mux(f_filter, d.tau_te, 0)
        tm_applied = Mux(f_filter, d.tau_tm, 0)

        def rv(x):
            return Mux(r_valid, x, 0)

        record = Cat(
            rv(op.values), rv(op.zeros), rv(op.filtered_zeros),
            rv(d.hist_base), rv(te_applied), rv(tm_applied), r_valid.as_unsigned(), Const(0, 7),
            *(rv(op.hist[b]) for b in range(HIST_BINS)),
            r_out, r_filt, r_dense, r_macs, Const(0, 32), idx, Const(0, 32),
        )
        assert len(record) == STATS_BYTES * 8, len(record)
        rec_beat = Signal(range(_STATS_BEATS + 1))
        stats_mode = Signal()
        with m.If(stats_mode):
            m.d.comb += [
                wf.inp.valid.eq(rec_beat < _STATS_BEATS),
                wf.inp.payload.data.eq(record.word_select(rec_beat, DATA_W)),
                wf.inp.payload.keep.eq((1 << ALIGN) - 1),
                wf.inp.payload.last.eq(rec_beat == _STATS_BEATS - 1),
            ]
            with m.If(wf.inp.valid & wf.inp.ready):
                m.d.sync += rec_beat.eq(rec_beat + 1)
        with m.Else():
            wiring.connect(m, op.o_fwd, wf.inp)

        # ---- sequencer -------------------------------------------------------------------
        code = Signal(8)  # error of the job
        sent_rd = Signal()
        sent_dec = Signal()
        seen_rd = Signal()
        rd_err = Signal(DMAError)
        seen_op = Signal()
        sent_op = Signal()
        seen_wf = Signal()
        seen_ws = Signal()
        wf_err = Signal(DMAError)
        ws_err = Signal(DMAError)
        op_status = Signal(PathStatus)
        need_wf = Signal()
        need_ws = Signal()
        eng_cmd_sent = Signal()
        with m.If(rd.done):
            m.d.sync += [seen_rd.eq(1), rd_err.eq(rd.error)]
        with m.If(wf.done):
            m.d.sync += [seen_wf.eq(1), wf_err.eq(wf.error)]
        with m.If(ws.done):
            m.d.sync += [seen_ws.eq(1), ws_err.eq(ws.error)]
        with m.If(op.done):
            m.d.sync += [seen_op.eq(1), op_status.eq(op.status)]

        ec = eng.cmd.payload
        m.d.comb += [ec.m.eq(dm), ec.n.eq(dn), ec.use_mask.eq(f_mask), ec.carry.eq(f_carry)]
        pc = op.cmd.payload
        drain_t = Signal()  # UPDATE: the W^T drain (n x m)
        m.d.comb += [
            pc.op.eq(PathOp.DRAIN), pc.m.eq(Mux(drain_t, dn, dm)), pc.n.eq(Mux(drain_t, dm, dn)),
            pc.relu.eq(f_relu), pc.raw.eq(f_raw), pc.fwd.eq(f_upd | (f_out & ~f_raw)),
            pc.filt.eq(f_filt & ~f_upd), pc.clear_stats.eq(1), pc.te.eq(te_applied),
            pc.tm.eq(tm_applied), pc.base.eq(d.hist_base),
        ]
        # the update path's hyper-parameters and shape
        for port, fld in ((upd.lr, d.lr), (upd.momentum, d.momentum),
                          (upd.weight_decay, d.weight_decay)):
            m.d.comb += [port.mant.eq(fld[:16]), port.shift.eq(fld[16:22])]
        m.d.comb += [upd.m.eq(dm), upd.n.eq(dn)]
        upd_over = Signal()
        seen_upd = Signal()
        with m.If(upd.done):
            m.d.sync += seen_upd.eq(1)
        dc = dec.cmd.payload
        # operand streams are budgets; a non-constant source, because a constant bit of a
        # partly assigned port becomes an `always @*` without inputs that Verilator never runs
        m.d.comb += dc.budget.eq(route == 1)

        def fail(c):
            m.d.sync += code.eq(c)
            m.next = "FLUSH"

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += busy.eq(0)
                with m.If(csr.ctrl_start):
                    m.d.sync += [
                        base.eq(csr.desc_base_addr), count.eq(csr.desc_count_count),
                        dram.eq(csr.dram_size_size), idx.eq(0),
                        dptr.eq(csr.desc_base_addr), pend.eq(0), code.eq(0),
                    ]
                    m.d.comb += clear_counters.eq(1)
                    m.next = "NEXT"
            with m.State("NEXT"):
                m.d.comb += busy.eq(1)
                m.d.sync += [dcyc.eq(0), done_count.eq(idx), drain_t.eq(0)]
                with m.If(idx == count):
                    with m.If(pend):
                        m.d.sync += [code.eq(ErrorCode.BAD_CHAIN), idx.eq(pend_idx)]
                        m.next = "FLUSH"
                    with m.Else():
                        m.next = "END"
                with m.Elif((dptr[:3] != 0) | (dptr + DESC_BYTES > dram)):
                    fail(ErrorCode.BAD_ADDRESS)
                with m.Else():
                    m.d.comb += [rd.cmd.valid.eq(1), rd.cmd.payload.addr.eq(dptr),
                                 rd.cmd.payload.length.eq(DESC_BYTES)]
                    m.d.sync += [route.eq(0), beat.eq(0), seen_rd.eq(0)]
                    with m.If(rd.cmd.ready):
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += busy.eq(1)
                with m.If(seen_rd):
                    with m.If(rd_err != DMAError.OK):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Else():
                        m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += busy.eq(1)
                with m.If(chk_code != 0):
                    fail(chk_code)
                with m.Elif(chk_nop):
                    m.next = "DONE_DESC"
                with m.Else():
                    m.d.sync += [eng_cmd_sent.eq(0), ld_target.eq(0)]
                    m.next = "CLEAR"
            with m.State("CLEAR"):
                # CLEAR_A, then CLEAR_B; then wait for the engine
                m.d.comb += busy.eq(1)
                m.d.comb += [eng.cmd.valid.eq(1),
                             ec.op.eq(Mux(eng_cmd_sent, EngineOp.CLEAR_B, EngineOp.CLEAR_A))]
                with m.If(eng.cmd.ready):
                    m.d.sync += eng_cmd_sent.eq(1)
                    with m.If(eng_cmd_sent):
                        m.next = "CLEAR_WAIT"
            with m.State("CLEAR_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(~eng.busy):
                    m.next = "LOAD_SETUP"
            with m.State("LOAD_SETUP"):
                m.d.comb += busy.eq(1)
                m.d.sync += [sent_rd.eq(0), sent_dec.eq(0), seen_rd.eq(0), route.eq(1)]
                with m.Switch(ld_target):
                    with m.Case(0):
                        m.d.sync += [ld_reblock.eq(f_arb), ld_limit.eq(dm),
                                     ld_kblocks.eq(dkb), ld_rows.eq(dkb << 4),
                                     ld_cblocks.eq(cb_m)]
                    with m.Case(1):
                        m.d.sync += [ld_reblock.eq(f_brb), ld_limit.eq(dn),
                                     ld_kblocks.eq(dkb), ld_rows.eq(dkb << 4),
                                     ld_cblocks.eq(cb_n)]
                    with m.Default():
                        m.d.sync += [ld_reblock.eq(0), ld_limit.eq(dm), ld_kblocks.eq(cb_n)]
                m.next = "LOAD_START"
            with m.State("LOAD_START"):
                m.d.comb += busy.eq(1)
                m.d.comb += ld_start.eq(1)  # adapters, transposer: parameters now stable
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += busy.eq(1)
                addr = Mux(ld_target == 0, d.a_addr, Mux(ld_target == 1, d.b_addr, d.mask_addr))
                length = Mux(ld_target == 0, d.a_len, Mux(ld_target == 1, d.b_len, d.mask_len))
                rows_in = Mux(ld_reblock, ld_rows, ld_limit)
                cbs_in = Mux(ld_reblock, ld_cblocks, ld_kblocks)
                m.d.comb += [
                    rd.cmd.valid.eq(~sent_rd), rd.cmd.payload.addr.eq(addr),
                    rd.cmd.payload.length.eq(length),
                    dec.cmd.valid.eq(~sent_dec), dc.blocks.eq(rows_in * cbs_in),
                ]
                with m.If(rd.cmd.ready):
                    m.d.sync += sent_rd.eq(1)
                with m.If(dec.cmd.ready):
                    m.d.sync += sent_dec.eq(1)
                # a decoder error stops the stream: the units behind it may wait for blocks
                # that never come (the data path is reset on the way out)
                with m.If(sent_rd & sent_dec & seen_rd & ~dec.busy & (dec.error | load_idle)):
                    with m.If(rd_err != DMAError.OK):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Elif(dec.error):
                        fail(ErrorCode.BAD_STREAM)
                    with m.Elif(eng.status != EngineStatus.OK):
                        fail(ErrorCode.INTERNAL)
                    with m.Elif((ld_target == 0) | ((ld_target == 1) & f_mask)):
                        m.d.sync += ld_target.eq(ld_target + 1)
                        m.next = "LOAD_SETUP"
                    with m.Else():
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += busy.eq(1)
                m.d.comb += [eng.cmd.valid.eq(1), ec.op.eq(EngineOp.RUN)]
                with m.If(eng.cmd.ready):
                    m.next = "RUN_WAIT"
            with m.State("RUN_WAIT"):
                m.d.comb += busy.eq(1)
                m.d.sync += [r_macs.eq(eng.macs_nonzero),
                             r_dense.eq((dm * dn * dkb) << 4)]
                with m.If(eng.done):
                    with m.If(eng.status != EngineStatus.OK):
                        fail(ErrorCode.INTERNAL)
                    with m.Elif(f_keep):
                        m.d.sync += [pend.eq(1), pend_idx.eq(idx), pend_m.eq(d.m),
                                     pend_n.eq(d.n), r_valid.eq(0), r_out.eq(0), r_filt.eq(0)]
                        m.next = "STATS"
                    with m.Elif(f_upd):
                        m.d.sync += [pend.eq(0), r_valid.eq(0), r_out.eq(0), r_filt.eq(0),
                                     upd_active.eq(1), upd.mode.eq(0), seen_upd.eq(0),
                                     sent_rd.eq(0), need_ws.eq(1), seen_rd.eq(0),
                                     seen_ws.eq(0), ws_err.eq(DMAError.OK), ws_state.eq(1),
                                     route.eq(3),
                                     upd_over.eq(0), drain_t.eq(0)]
                        m.next = "UPD_START"
                    with m.Else():
                        m.d.sync += [pend.eq(0), sent_op.eq(0), seen_op.eq(0),
                                     seen_wf.eq(~f_out), seen_ws.eq(~f_filt),
                                     need_wf.eq(f_out), need_ws.eq(f_filt), stats_mode.eq(0),
                                     wf_err.eq(DMAError.OK), ws_err.eq(DMAError.OK)]
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # the output path's command and the writers' commands, in any order
                m.d.comb += busy.eq(1)
                m.d.comb += [
                    op.cmd.valid.eq(~sent_op),
                    wf.cmd.valid.eq(need_wf), wf.cmd.payload.addr.eq(d.out_addr),
                    wf.cmd.payload.length.eq(d.out_cap),
                    ws.cmd.valid.eq(need_ws), ws.cmd.payload.addr.eq(d.filt_addr),
                    ws.cmd.payload.length.eq(d.filt_cap),
                ]
                with m.If(op.cmd.ready):
                    m.d.sync += sent_op.eq(1)
                with m.If(wf.cmd.ready):
                    m.d.sync += need_wf.eq(0)
                with m.If(ws.cmd.ready):
                    m.d.sync += need_ws.eq(0)
                with m.If((sent_op | op.cmd.ready) & ~(need_wf & ~wf.cmd.ready)
                          & ~(need_ws & ~ws.cmd.ready)):
                    m.next = "DRAIN_WAIT"
            with m.State("DRAIN_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(seen_op & seen_wf & seen_ws):
                    m.d.sync += [r_valid.eq(~f_raw),
                                 r_out.eq(Mux(f_out, wf.written, 0)),
                                 r_filt.eq(Mux(f_filt, ws.written, 0))]
                    with m.If((wf_err == DMAError.BUS) | (ws_err == DMAError.BUS)):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Elif((wf_err != DMAError.OK) | (ws_err != DMAError.OK)):
                        fail(ErrorCode.OVERFLOW)
                    with m.Elif(op_status != PathStatus.OK):
                        fail(ErrorCode.INTERNAL)
                    with m.Else():
                        m.next = "STATS"
            with m.State("UPD_START"):
                # pass 0: dW and the state through the update unit, state back to DRAM
                m.d.comb += [busy.eq(1), upd.start.eq(1)]
                m.next = "UPD"
            with m.State("UPD"):
                m.d.comb += busy.eq(1)
                m.d.comb += [
                    rd.cmd.valid.eq(~sent_rd), rd.cmd.payload.addr.eq(d.mask_addr),
                    rd.cmd.payload.length.eq(d.mask_len),
                    ws.cmd.valid.eq(need_ws), ws.cmd.payload.addr.eq(d.mask_addr),
                    ws.cmd.payload.length.eq(d.mask_len),
                ]
                with m.If(rd.cmd.ready):
                    m.d.sync += sent_rd.eq(1)
                with m.If(ws.cmd.ready):
                    m.d.sync += need_ws.eq(0)
                with m.If(sent_rd & ~need_ws & seen_rd & seen_ws & seen_upd):
                    m.d.sync += [ws_state.eq(0), upd_active.eq(0), sent_op.eq(0),
                                 seen_op.eq(0), seen_wf.eq(0), need_wf.eq(1)]
                    with m.If((rd_err != DMAError.OK) | (ws_err != DMAError.OK)):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Elif(f_out):
                        m.next = "UPD_DRAIN"
                    with m.Elif(f_filt):
                        m.next = "UPD_T_START"
                    with m.Else():
                        m.next = "STATS"
            with m.State("UPD_T_START"):
                # pass 1: the transposed masters into the C buffer
                m.d.comb += [busy.eq(1), upd.start.eq(1)]
                m.d.sync += [upd_active.eq(1), upd.mode.eq(1), seen_upd.eq(0),
                             drain_t.eq(1), sent_op.eq(0), seen_op.eq(0), seen_wf.eq(0),
                             need_wf.eq(1)]
                m.next = "UPD_T"
            with m.State("UPD_T"):
                m.d.comb += busy.eq(1)
                with m.If(seen_upd):
                    m.d.sync += upd_active.eq(0)
                    m.next = "UPD_DRAIN"
            with m.State("UPD_DRAIN"):
                # W (m x n) to out_addr, or W^T (n x m) to filt_addr, through the forward path
                m.d.comb += busy.eq(1)
                m.d.comb += [
                    op.cmd.valid.eq(~sent_op),
                    wf.cmd.valid.eq(need_wf),
                    wf.cmd.payload.addr.eq(Mux(drain_t, d.filt_addr, d.out_addr)),
                    wf.cmd.payload.length.eq(Mux(drain_t, d.filt_cap, d.out_cap)),
                ]
                with m.If(op.cmd.ready):
                    m.d.sync += sent_op.eq(1)
                with m.If(wf.cmd.ready):
                    m.d.sync += need_wf.eq(0)
                with m.If((sent_op | op.cmd.ready) & (~need_wf | wf.cmd.ready)):
                    m.next = "UPD_DRAIN_WAIT"
            with m.State("UPD_DRAIN_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(seen_op & seen_wf):
                    m.d.sync += [sent_op.eq(0), seen_op.eq(0), seen_wf.eq(0), need_wf.eq(1)]
                    with m.If(drain_t):
                        m.d.sync += r_filt.eq(wf.written)
                    with m.Else():
                        m.d.sync += r_out.eq(wf.written)
                    with m.If(wf_err == DMAError.BUS):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Elif(~drain_t & f_filt):
                        m.d.sync += upd_over.eq(upd_over | (wf_err != DMAError.OK))
                        m.next = "UPD_T_START"
                    with m.Elif(upd_over | (wf_err != DMAError.OK)):
                        fail(ErrorCode.OVERFLOW)
                    with m.Elif(op_status != PathStatus.OK):
                        fail(ErrorCode.INTERNAL)
                    with m.Else():
                        m.next = "STATS"
            with m.State("STATS"):
                m.d.comb += busy.eq(1)
                with m.If(d.stats_addr == 0):
                    m.next = "DONE_DESC"
                with m.Else():
                    m.d.comb += [wf.cmd.valid.eq(1), wf.cmd.payload.addr.eq(d.stats_addr),
                                 wf.cmd.payload.length.eq(STATS_BYTES)]
                    m.d.sync += [stats_mode.eq(1), rec_beat.eq(0), seen_wf.eq(0)]
                    with m.If(wf.cmd.ready):
                        m.next = "STATS_WAIT"
            with m.State("STATS_WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(seen_wf):
                    m.d.sync += stats_mode.eq(0)
                    with m.If(wf_err != DMAError.OK):
                        fail(ErrorCode.BUS_ERROR)
                    with m.Else():
                        m.next = "DONE_DESC"
            with m.State("DONE_DESC"):
                m.d.comb += busy.eq(1)
                with m.If(~chk_nop):
                    m.d.sync += [
                        c_macs.eq(c_macs + r_macs), c_dense.eq(c_dense + r_dense),
                        c_vals.eq(c_vals + rv(op.values)), c_zeros.eq(c_zeros + rv(op.zeros)),
                        c_fzeros.eq(c_fzeros + rv(op.filtered_zeros)),
                    ]
                    with m.Switch(d.phase):
                        for p in (Phase.FP, Phase.BP, Phase.WG):
                            with m.Case(p):
                                m.d.sync += c_phase[p].eq(c_phase[p] + dcyc)
                m.d.sync += [idx.eq(idx + 1), dptr.eq(dptr + DESC_BYTES)]
                m.next = "NEXT"
            with m.State("END"):
                m.d.comb += [busy.eq(1), csr.status_done_set.eq(1)]
                m.d.sync += [err_code.eq(0), err_index.eq(count), done_count.eq(count)]
                m.next = "IDLE"
            with m.State("FLUSH"):
                # let the DMA transfers in flight end, dropping the reader's data
                m.d.comb += busy.eq(1)
                m.d.sync += [route.eq(2), stats_mode.eq(0), pend.eq(0)]
                with m.If(~rd.busy & ~wf.busy & ~ws.busy & ~rd.done):
                    m.d.comb += dp_rst.eq(1)
                    m.next = "ERROR"
            with m.State("ERROR"):
                m.d.comb += [busy.eq(1), csr.status_error_set.eq(1)]
                m.d.sync += [err_code.eq(code), err_index.eq(idx),  # done_count: set by NEXT
                             upd_active.eq(0), ws_state.eq(0), drain_t.eq(0)]
                m.next = "IDLE"

        # last, so that it takes priority over every increment
        with m.If(clear_counters | after_rst):
            m.d.sync += [c.eq(0) for c in counters]
        return m
