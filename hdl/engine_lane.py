"""One lane of the sparse GEMM engine: R processing elements fed by a zero-skipping walker.

A lane computes one *task* at a time: the R outputs ``C[i, g*R : g*R + R]`` (output row ``i``,
column group ``g``). It walks the nonzero blocks of A's row ``i`` (compressed: a header per
nonzero block with its mask, exponent and a pointer to its packed nonzero mantissas) and, per
block, the *effective* mask ``eff = maskA & cmaskB(g, kb)`` where ``cmaskB`` is the OR of the R
B-block masks of the group (so in WG, where B is sparse too, a k where all R B values are zero
is skipped as well). Each set bit of ``eff`` is one cycle: the nonzero ``a = A[i, k]`` times the
R values ``B[g*R + r, k]``, one product per PE.

Pipeline (one token per cycle, stalls only at the front):

``T``   task prefetch: take (i, g) from the dispatcher, read the row table (first header,
        header count) and the output mask; push the task's starting accumulators into the
        *carry queue* (``carry_data`` with ``carry = 1``, columns ``>= n`` in the reset state;
        the reset state ``(0, 0)`` with ``carry = 0``); a task with no block or no enabled
        output becomes an *empty marker* (it costs one cycle and outputs its starting
        accumulators).
``I``   header issue: one header read per cycle, as long as the descriptor queue has room
        (credits count the reads in flight).
``P1``  header data; read the B exponents and column mask of (g, kb).
``P2``  ``eff``, ``s_r = EA + EB_r``, PE enables; push the block descriptor (blocks whose
        ``eff`` is empty are dropped here, their partial is zero).
``W``   walker: priority-encode ``eff``, one nonzero per cycle; the address of ``A[i, k]`` is
        the block's pointer plus the popcount of ``maskA`` below ``k``. The next descriptor is
        taken in the same cycle as the last nonzero of the current one (no bubble).
``R``   the A nonzero and the R B values come out of the buffers.
``M1``  R products ``a * b_r`` (8 x 8 bits).
``M2``  block partials ``p_r`` (exact); at the block's last nonzero they go to ``A``.
``A``   :class:`~hdl.pe.AlignUnit` per PE; a task's first block starts from the head of the
        carry queue, the others from the accumulators; at the task's last block the R
        accumulators go to the lane's output queue and the carry queue is popped. With
        ``align_share = S`` a unit serves S PEs, one per cycle: a block spends S cycles here
        and the walker keeps blocks' last tokens S cycles apart.

The carry queue (:func:`carry_queue_depth` entries) covers every task a lane can hold between
T and A, so it never holds back a grant; ``nz_macs`` counts the nonzero products of enabled
outputs per cycle (at M1: a product of two nonzero int8 is nonzero).

A task's last token is issued only when the output queue has a free slot (credits), so nothing
behind the walker ever stalls.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import BLOCK, EngineConfig
from .pe import ACC_W, EXP_W, P_W, S_W, AlignUnit
from .regfifo import BlockRAMQueue, RegFIFO

__all__ = ["Lane", "check_align_share", "hdr_layout", "row_layout", "out_layout",
           "bexp_layout", "carry_layout", "carry_queue_depth", "widths"]


def widths(cfg: EngineConfig) -> dict:
    """Address and index widths derived from a configuration."""
    return {
        "m": max(1, ceil_log2(cfg.max_m)),
        "g": max(1, ceil_log2(cfg.groups)),
        "kb": max(1, ceil_log2(cfg.k_blocks)),
        "n": max(1, ceil_log2(cfg.max_n)),
        "nz": max(1, ceil_log2(cfg.a_nz_depth)),
        "hdr": max(1, ceil_log2(cfg.a_hdr_depth)),
        "cnt": cfg.k_blocks.bit_length(),
    }


def hdr_layout(cfg):
    """A block header in the A buffer: block index, mask, exponent, first nonzero's address."""
    w = widths(cfg)
    return data.StructLayout({"kb": w["kb"], "mask": BLOCK, "exp": 8, "nz": w["nz"]})


def row_layout(cfg):
    """A row-table entry: first header of the row, number of nonzero blocks."""
    w = widths(cfg)
    return data.StructLayout({"start": w["hdr"], "count": w["cnt"]})


def bexp_layout(cfg):
    """B exponents of one (group, kb): R exponents (0 = absent block) and the column mask."""
    return data.StructLayout({"exp": data.ArrayLayout(8, cfg.rows), "cmask": BLOCK})


def out_layout(cfg):
    """One output beat: the R accumulators of task (row, grp)."""
    w = widths(cfg)
    return data.StructLayout({
        "row": w["m"],
        "grp": w["g"],
        "mant": data.ArrayLayout(signed(ACC_W), cfg.rows),
        "exp": data.ArrayLayout(unsigned(EXP_W), cfg.rows),
    })


def carry_layout(cfg):
    """A task's R starting accumulators (bit-identical to the output path's
    :func:`~hdl.output_path.carry_data_layout`, which cannot be imported here)."""
    return data.StructLayout({
        "mant": data.ArrayLayout(signed(ACC_W), cfg.rows),
        "exp": data.ArrayLayout(unsigned(EXP_W), cfg.rows),
    })


def check_align_share(value, cfg: EngineConfig, owner=None) -> int:
    """``value`` if it is a valid ``align_share`` for ``cfg`` (a power of two from 1 to
    ``cfg.rows``), else ``ValueError`` (``owner``, a component being built, is silenced)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 \
            or value & (value - 1) or value > cfg.rows:
        if owner is not None:
            owner._MustUse__silence = True  # never elaborated
        raise ValueError(f"align_share must be a power of two from 1 to rows ({cfg.rows}), "
                         f"not {value!r}")
    return value


def carry_queue_depth(cfg) -> int:
    """Entries of a lane's carry queue: the most tasks a lane holds between its task slot and
    the align stage (T, I, ``desc_depth`` in P1 / P2 / the descriptor queue, W, R, M1, A), so
    the queue never holds back a grant."""
    return cfg.desc_depth + 6


def _desc_layout(cfg):
    w = widths(cfg)
    return data.StructLayout({
        "eff": BLOCK,
        "mask": BLOCK,
        "nz": w["nz"],
        "kb": w["kb"],
        "g": w["g"],
        "i": w["m"],
        "en": cfg.rows,
        "s": data.ArrayLayout(S_W, cfg.rows),
        "last": 1,
    })


def _tok_layout(cfg):
    w = widths(cfg)
    return data.StructLayout({
        "valid": 1, "real": 1, "lastblk": 1, "last": 1,
        "i": w["m"], "g": w["g"], "en": cfg.rows, "s": data.ArrayLayout(S_W, cfg.rows),
    })


class Lane(wiring.Component):
    """One lane: task prefetch, block walker and R PEs (see the module docstring).

    Parameters
    ----------
    cfg : EngineConfig
        The engine's configuration.
    carry_bram : bool
        Keep the carry queue in block RAM (:class:`~hdl.regfifo.BlockRAMQueue`: about 20
        DP16KD on the ECP5 at R = 16) instead of distributed RAM (about 1,030 LUT positions).
        Same behaviour and cycles: an entry is written at least seven cycles before the align
        stage reads it, more than the two the block RAM queue needs.
    align_share : int
        PEs per :class:`~hdl.pe.AlignUnit` (a power of two from 1 to R; 1, the default, is
        one unit per PE). With ``align_share = S`` the R PEs share R / S units and the align
        stage spends S cycles on a block (PE ``j*S + k`` in its cycle ``k``); the walker
        keeps the last tokens of two blocks S cycles apart, so a block with fewer than S
        nonzeros costs S cycles instead of one. An FPGA area trade: the results are the
        same, only the cycles of sparse blocks grow (``docs/architecture.md``, "Shared align
        units").

    Attributes
    ----------
    task_req : Out(1)
        The lane's task slot is free.
    task_grant : In(1)
        The dispatcher gives the lane task (``task_i``, ``task_g``) this cycle.
    n, use_mask : In
        Run parameters: tile width N (columns ``>= n`` stay in the reset state) and whether
        the output mask buffer applies.
    row_addr, row_data, om_addr, om_data, hdr_addr, hdr_data, bexp_addr, bexp_data,
    nz_addr, nz_data, bm_addr, bm_data :
        Read ports into the shared buffers (synchronous: data one cycle after the address).
    o : Out(stream.Signature(out_layout(cfg)))
        Finished tasks.
    carry : In(1)
        Run parameter: tasks start from ``carry_data`` instead of the reset state.
    carry_data : In(carry_layout(cfg))
        The granted task's starting accumulators, valid the cycle after ``task_grant``
        (the engine reads the output path's carry port at grant time).
    mac : Out(1)
        A nonzero entered the PEs this cycle (performance counter).
    nz_macs : Out(range(R + 1))
        Nonzero products of enabled outputs formed in the previous cycle (registered).
    busy : Out(1)
        The lane holds work (anything from the task slot to the output queue).
    """

    def __init__(self, cfg: EngineConfig, *, carry_bram: bool = False, align_share: int = 1):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True  # never elaborated: no "created but never used"
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        if not isinstance(carry_bram, bool):
            self._MustUse__silence = True
            raise TypeError(f"carry_bram must be a bool, not {carry_bram!r}")
        check_align_share(align_share, cfg, self)
        self._cfg = cfg
        self._carry_bram = carry_bram
        self._align_share = align_share
        w = widths(cfg)
        r = cfg.rows
        super().__init__({
            "task_req": Out(1),
            "task_grant": In(1),
            "task_i": In(w["m"]),
            "task_g": In(w["g"]),
            "n": In(w["n"] + 1),
            "use_mask": In(1),
            "row_addr": Out(w["m"]),
            "row_data": In(row_layout(cfg)),
            "om_addr": Out(w["m"] + w["g"]),
            "om_data": In(r),
            "hdr_addr": Out(w["hdr"]),
            "hdr_data": In(hdr_layout(cfg)),
            "bexp_addr": Out(w["g"] + w["kb"]),
            "bexp_data": In(bexp_layout(cfg)),
            "carry": In(1),
            "carry_data": In(carry_layout(cfg)),
            "nz_addr": Out(w["nz"]),
            "nz_data": In(signed(8)),
            "bm_addr": Out(w["g"] + w["kb"] + 4),
            "bm_data": In(data.ArrayLayout(signed(8), r)),
            "o": Out(stream.Signature(out_layout(cfg))),
            "mac": Out(1),
            "nz_macs": Out(range(r + 1)),
            "busy": Out(1),
        })

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        w = widths(cfg)
        desc_l = _desc_layout(cfg)
        tok_l = _tok_layout(cfg)

        # ---- T: task prefetch slot ------------------------------------------------------
        t_pend = Signal()
        t_full = Signal()
        t_take = Signal()
        t_i = Signal(w["m"])
        t_g = Signal(w["g"])
        t_start = Signal(w["hdr"])
        t_count = Signal(w["cnt"])
        t_en = Signal(R)
        # carry queue: one entry per task, pushed in the cycle after the grant (t_pend, when
        # the carry data arrives), popped when the task's last token leaves the align stage
        # (an entry is the raw carry data and a per-column keep bit; the align stage applies
        # the keep bits in the same LUT as its fresh-task multiplexer)
        cq_l = data.StructLayout({"data": carry_layout(cfg), "keep": R})
        if self._carry_bram:
            cq = BlockRAMQueue(width=cq_l.size, depth=carry_queue_depth(cfg))
        else:
            cq = fifo.SyncFIFO(width=cq_l.size, depth=carry_queue_depth(cfg))
        m.submodules.carry_fifo = cq
        cq_w = Signal(cq_l)
        # the entry's data is not gated by t_pend (the queue ignores it unless w_en): an
        # assignment inside the `If(t_pend)` below would cost an AND gate per bit, R x 42
        # LUTs a lane, and a copy of the output path's carry-port logic in every lane
        m.d.comb += [cq.w_data.eq(cq_w), cq.w_en.eq(t_pend), cq_w.data.eq(self.carry_data)]
        m.d.comb += [
            self.task_req.eq(~t_pend & (~t_full | t_take) & cq.w_rdy),
            self.row_addr.eq(self.task_i),
            self.om_addr.eq(Cat(self.task_g, self.task_i)),
        ]
        with m.If(t_take):
            m.d.sync += t_full.eq(0)
        with m.If(self.task_grant):
            m.d.sync += [t_pend.eq(1), t_i.eq(self.task_i), t_g.eq(self.task_g)]
        with m.If(t_pend):
            # columns g*R + r >= n are outside the tile
            left = Signal(signed(w["n"] + 2))
            lg = R.bit_length() - 1
            m.d.comb += left.eq(self.n - (t_g << lg))
            # colvalid[r] = left > r, as a sign bit, an OR and a 16-entry constant table
            # (sixteen comparators would each take a carry chain)
            colvalid = Signal(R)
            thermo = Array(Const((1 << k) - 1, R) for k in range(R))
            with m.If(left[-1]):
                m.d.comb += colvalid.eq(0)
            with m.Elif(left[lg:-1].any()):
                m.d.comb += colvalid.eq((1 << R) - 1)
            with m.Else():
                m.d.comb += colvalid.eq(thermo[left[:lg]] if lg else 0)
            om = Mux(self.use_mask, self.om_data, (1 << R) - 1)
            # columns >= n keep the reset state, also with carry
            m.d.comb += cq_w.keep.eq(Mux(self.carry, colvalid, 0))
            m.d.sync += [
                t_pend.eq(0), t_full.eq(1),
                t_start.eq(self.row_data.start), t_count.eq(self.row_data.count),
                t_en.eq(om & colvalid),
            ]

        # ---- I: header issue ------------------------------------------------------------
        fifo_d = fifo.SyncFIFO(width=desc_l.size, depth=cfg.desc_depth)
        m.submodules.desc_fifo = fifo_d
        i_active = Signal()
        i_hptr = Signal(w["hdr"])
        i_left = Signal(w["cnt"])
        i_i = Signal(w["m"])
        i_g = Signal(w["g"])
        i_en = Signal(R)
        p1 = Signal(data.StructLayout({"valid": 1, "real": 1, "last": 1, "i": w["m"],
                                       "g": w["g"], "en": R}))
        p2 = Signal(data.StructLayout({"valid": 1, "real": 1, "last": 1, "i": w["m"],
                                       "g": w["g"], "en": R, "hdr": hdr_layout(cfg)}))
        credit = Signal()
        m.d.comb += credit.eq(fifo_d.level + p1.valid + p2.valid < cfg.desc_depth)
        m.d.sync += p1.valid.eq(0)
        m.d.comb += self.hdr_addr.eq(i_hptr)
        with m.If(credit):
            with m.If(i_active):
                m.d.sync += [
                    p1.valid.eq(1), p1.real.eq(1), p1.last.eq(i_left == 1),
                    p1.i.eq(i_i), p1.g.eq(i_g), p1.en.eq(i_en),
                    i_hptr.eq(i_hptr + 1), i_left.eq(i_left - 1),
                ]
                with m.If(i_left == 1):
                    m.d.sync += i_active.eq(0)
            with m.Elif(t_full):
                m.d.comb += t_take.eq(1)
                m.d.sync += [p1.valid.eq(1), p1.i.eq(t_i), p1.g.eq(t_g), p1.en.eq(t_en)]
                with m.If((t_count == 0) | (t_en == 0)):
                    m.d.sync += [p1.real.eq(0), p1.last.eq(1)]
                with m.Else():
                    m.d.comb += self.hdr_addr.eq(t_start)
                    m.d.sync += [
                        p1.real.eq(1), p1.last.eq(t_count == 1),
                        i_active.eq(t_count != 1),
                        i_hptr.eq(t_start + 1), i_left.eq(t_count - 1),
                        i_i.eq(t_i), i_g.eq(t_g), i_en.eq(t_en),
                    ]

        # ---- P1: header data, B exponent read -------------------------------------------
        m.d.comb += self.bexp_addr.eq(Cat(self.hdr_data.kb, p1.g))
        m.d.sync += [
            p2.valid.eq(p1.valid), p2.real.eq(p1.real), p2.last.eq(p1.last),
            p2.i.eq(p1.i), p2.g.eq(p1.g), p2.en.eq(p1.en), p2.hdr.eq(self.hdr_data),
        ]

        # ---- P2: descriptor -------------------------------------------------------------
        dw = Signal(desc_l)
        eff = Signal(BLOCK)
        m.d.comb += [
            eff.eq(Mux(p2.real, p2.hdr.mask & self.bexp_data.cmask, 0)),
            dw.eff.eq(eff), dw.mask.eq(p2.hdr.mask), dw.nz.eq(p2.hdr.nz),
            dw.kb.eq(p2.hdr.kb), dw.g.eq(p2.g), dw.i.eq(p2.i), dw.last.eq(p2.last),
            dw.en.eq(p2.en & Cat(self.bexp_data.exp[r] != 0 for r in range(R))),
        ]
        for r in range(R):
            m.d.comb += dw.s[r].eq(p2.hdr.exp + self.bexp_data.exp[r])
        m.d.comb += [
            fifo_d.w_data.eq(dw),
            fifo_d.w_en.eq(p2.valid & ((eff != 0) | p2.last)),
        ]

        # ---- W: walker ------------------------------------------------------------------
        wd = Signal(desc_l)
        w_valid = Signal()
        w_rem = Signal(BLOCK)
        out_cnt = Signal(range(cfg.out_depth + 1))
        out_pop = Signal()
        rd = desc_l(fifo_d.r_data)

        lowbit = Signal(BLOCK)
        below = Signal(BLOCK)
        kidx = Signal(4)
        m.d.comb += [
            lowbit.eq(w_rem & (~w_rem + 1)),
            below.eq(wd.mask & (lowbit - 1)),
        ]
        for b in range(BLOCK):
            with m.If(lowbit[b]):
                m.d.comb += kidx.eq(b)
        pop = sum(below[b] for b in range(BLOCK))
        is_empty = w_rem == 0
        lastblk = is_empty | ((w_rem & (w_rem - 1)) == 0)
        last_task = lastblk & wd.last
        issue = Signal()
        # shared align units: a block's last token waits until S cycles after the previous
        # one, so the align stage has finished the previous block's S steps
        S = self._align_share
        gap_ok = Const(1)
        if S > 1:
            lb_wait = Signal(range(S))
            gap_ok = ~lastblk | (lb_wait == 0)
            with m.If(issue & lastblk):
                m.d.sync += lb_wait.eq(S - 1)
            with m.Elif(lb_wait != 0):
                m.d.sync += lb_wait.eq(lb_wait - 1)
        m.d.comb += [
            issue.eq(w_valid & (~last_task | (out_cnt < cfg.out_depth)) & gap_ok),
            self.nz_addr.eq(wd.nz + pop),
            self.bm_addr.eq(Cat(kidx, wd.kb, wd.g)),
        ]
        load = Signal()
        m.d.comb += load.eq(fifo_d.r_rdy & (~w_valid | (issue & lastblk)))
        m.d.comb += fifo_d.r_en.eq(load)
        with m.If(issue):
            m.d.sync += w_rem.eq(w_rem & (w_rem - 1))
            with m.If(lastblk & ~load):
                m.d.sync += w_valid.eq(0)
        with m.If(load):
            m.d.sync += [wd.eq(rd), w_rem.eq(rd.eff), w_valid.eq(1)]
        m.d.comb += out_pop.eq(self.o.valid & self.o.ready)
        m.d.sync += out_cnt.eq(out_cnt + (issue & last_task) - out_pop)
        m.d.comb += self.mac.eq(issue & ~is_empty)

        # ---- R: buffer reads ------------------------------------------------------------
        rt = Signal(tok_l)
        m.d.sync += [
            rt.valid.eq(issue), rt.real.eq(~is_empty),
            rt.lastblk.eq(lastblk), rt.last.eq(last_task), rt.i.eq(wd.i), rt.g.eq(wd.g),
            rt.en.eq(wd.en), rt.s.eq(wd.s),
        ]

        # ---- M1: products ---------------------------------------------------------------
        m1 = Signal(tok_l)
        prod = Signal(data.ArrayLayout(signed(16), R))
        m.d.sync += m1.eq(rt)
        a_val = Signal(signed(8))  # the A nonzero, 0 for a bubble or an empty marker
        m.d.comb += a_val.eq(Mux(rt.valid & rt.real, self.nz_data, 0))
        for r in range(R):
            m.d.sync += prod[r].eq(a_val * self.bm_data[r])

        # nonzero products of enabled outputs (prod is 0 unless the token is real)
        nzc = Signal(range(R + 1))
        m.d.sync += nzc.eq(sum((m1.en[r] & (prod[r] != 0)) for r in range(R)))
        m.d.comb += self.nz_macs.eq(nzc)

        # ---- M2: block partials ---------------------------------------------------------
        # pacc is 0 at every block's first token: it returns to 0 with each block's last
        # token (a synchronous reset, no adder-input multiplexer). The align stage gets
        # (p, s) = (0, 0) for a zero partial or a disabled PE: the AlignUnit's idle step, so
        # the accumulators need no hold multiplexer.
        # An FPGA flip-flop has one synchronous reset: a register that also takes the
        # domain's reset pays a LUT per bit for a second zeroing condition. So pacc, al_p and
        # al_s are reset-less. pacc is zeroed instead in the cycle after any reset (including
        # the accelerator's data-path reset, which a ResetInserter applies to `after_rst`
        # only), before any token can reach M2; al_p and al_s are only read with al.valid.
        after_rst = Signal(init=1)
        m.d.sync += after_rst.eq(0)
        pacc = Signal(data.ArrayLayout(signed(P_W), R), reset_less=True)
        al = Signal(tok_l)
        al_p = Signal(data.ArrayLayout(signed(P_W), R), reset_less=True)
        al_s = Signal(data.ArrayLayout(unsigned(S_W), R), reset_less=True)
        m.d.sync += al.valid.eq(0)
        psum = [Signal(signed(P_W), name=f"psum{r}") for r in range(R)]
        m.d.comb += [psum[r].eq(pacc[r] + prod[r]) for r in range(R)]
        with m.If(after_rst | (m1.valid & m1.lastblk)):
            m.d.sync += pacc.eq(0)
        with m.Elif(m1.valid):
            m.d.sync += [pacc[r].eq(psum[r]) for r in range(R)]
        with m.If(m1.valid & m1.lastblk):
            m.d.sync += al.eq(m1)
            for r in range(R):
                m.d.sync += [al_p[r].eq(Mux(m1.en[r], psum[r], 0)),
                             al_s[r].eq(Mux(m1.en[r] & (psum[r] != 0), m1.s[r], 0))]

        # ---- A: align into the accumulators ---------------------------------------------
        acc_s = Signal(data.ArrayLayout(signed(ACC_W), R))
        acc_e = Signal(data.ArrayLayout(unsigned(EXP_W), R))
        fifo_o = RegFIFO(width=out_layout(cfg).size, depth=cfg.out_depth)
        m.submodules.out_fifo = fifo_o
        ow = Signal(out_layout(cfg))
        m.d.comb += [ow.row.eq(al.i), ow.grp.eq(al.g)]
        # a task's first token starts from its carry-queue entry (the reset state with
        # carry = 0), the others from the accumulators
        fresh = Signal(init=1)
        head = cq_l(cq.r_data)
        # a block's align steps: one cycle (al.valid) with a unit per PE; with shared units
        # S cycles, phase k stepping PE j*S + k on unit j (al, al_p and al_s hold: the next
        # block's last token comes S cycles later, see the walker)
        if S > 1:
            ph = Signal(range(S))
            a_act = al.valid | (ph != 0)
            with m.If(a_act):
                m.d.sync += ph.eq(ph + 1)  # wraps to 0 after phase S - 1
            a_end = a_act & (ph == S - 1)
        else:
            ph = Const(0)
            a_act = a_end = al.valid
        with m.If(a_end):
            m.d.sync += fresh.eq(al.last)
        m.d.comb += cq.r_en.eq(a_end & al.last)

        def pick(values):  # the value of this phase's PE in a unit's group
            values = list(values)
            return values[0] if S == 1 else Array(values)[ph]

        for j in range(R // S):
            au = AlignUnit()
            m.submodules[f"pe{j}"] = au
            group = range(j * S, j * S + S)
            # a PE's accumulator before this step: the carry-queue head for a task's first
            # block (its keep bit applied), else the PE's own
            m.d.comb += [
                au.acc_s.eq(pick(Mux(fresh, Mux(head.keep[r], head.data.mant[r], 0), acc_s[r])
                                 for r in group)),
                au.acc_e.eq(pick(Mux(fresh, Mux(head.keep[r], head.data.exp[r], 0), acc_e[r])
                                 for r in group)),
                au.p.eq(pick(al_p[r] for r in group)),
                au.s.eq(pick(al_s[r] for r in group)),
            ]
            for k, r in enumerate(group):
                with m.If(a_act & (ph == k)):
                    m.d.sync += [acc_s[r].eq(au.new_s), acc_e[r].eq(au.new_e)]
                # the task's results: the last phase's from the unit, the others from the
                # accumulators written in the earlier phases of this block
                if k == S - 1:
                    m.d.comb += [ow.mant[r].eq(au.new_s), ow.exp[r].eq(au.new_e)]
                else:
                    m.d.comb += [ow.mant[r].eq(acc_s[r]), ow.exp[r].eq(acc_e[r])]
        m.d.comb += [
            fifo_o.w_data.eq(ow),
            fifo_o.w_en.eq(a_end & al.last),
            self.o.valid.eq(fifo_o.r_rdy),
            self.o.payload.eq(fifo_o.r_data),
            fifo_o.r_en.eq(self.o.ready),
        ]
        m.d.comb += self.busy.eq(t_pend | t_full | i_active | p1.valid | p2.valid
                                 | fifo_d.r_rdy | w_valid | (out_cnt != 0))
        # (the carry queue is empty whenever the rest is: its entries live from T to A)
        return m
