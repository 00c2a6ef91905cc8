"""The weight-update path of the accelerator top: dW from the C buffer, state in and out, the
new masters back into the C buffer for the W and W^T drains (``golden.jobs``, "Weight update").

After a WG tile with ``Flag.UPDATE`` has been computed, its accumulators ``dW (m x n)`` sit in
the output path's C buffer. :class:`UpdatePath` runs in two passes, each started by ``start``
with ``mode``:

* ``mode = 0`` (update): for every task ``(i, g)`` in row-major order it reads the R
  accumulators through the output path's carry port, takes one state beat per element ``(i,
  j)``, ``j < n`` (64-bit: int32 master ``w`` low, int32 velocity ``v`` high, a word of
  ``-2**31`` read as ``-(2**31 - 1)``) from ``state_in``, runs the element through the
  :class:`~hdl.update_unit.UpdateUnit`, sends the new ``(w', v')`` on ``state_out`` (``last``
  on the tile's last element), keeps ``w'`` in its own buffer (``max_m x max_n`` words) and
  writes the task back into the C buffer as accumulators ``S = w'``, ``ea = 250`` (a beat on
  ``o``, the engine's output format; columns ``>= n`` as 0): a normal drain of ``m x n`` then
  gives ``W``.
* ``mode = 1`` (transpose): writes the transposed masters into the C buffer, task ``(j, g)``
  holding ``w'[g R + r, j]`` for ``r < R`` (rows ``>= m`` as 0): a drain of ``n x m`` gives
  ``W^T``. One buffer read per cycle.

``done`` pulses when a pass has finished (every beat out). The carry port and ``o`` belong to
this unit only while it is busy (the top multiplexes them with the engine's).
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.update import MASTER_EA

from .bfp_layouts import bus_beat
from .config import EngineConfig
from .engine_lane import out_layout, widths
from .output_path import carry_addr_layout, carry_data_layout
from .update_unit import HYPER, UpdateUnit

__all__ = ["UpdatePath"]


class UpdatePath(wiring.Component):
    """Weight update between the C buffer and DRAM (module docstring).

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    start : In(1)
        Begin a pass (``mode``, ``m``, ``n`` must be stable from then to ``done``).
    mode : In(1)
        0: update, 1: transpose.
    m, n : In
        The WG tile's shape (``m`` outputs, ``n`` inputs).
    busy, done : Out(1)
    lr, momentum, weight_decay : In(HYPER)
    carry_en, carry_addr, carry_data :
        The output path's carry read port (as the engine's).
    state_in : In(stream.Signature(bus_beat(64)))
    state_out : Out(stream.Signature(bus_beat(64)))
    o : Out(stream.Signature(out_layout(cfg)))
        Task beats into the C buffer.
    """

    def __init__(self, cfg: EngineConfig):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        if cfg.max_m != cfg.max_n:
            self._MustUse__silence = True
            raise ValueError(f"The update path transposes tiles in the C buffer: max_m and "
                             f"max_n must be equal, not {cfg.max_m} and {cfg.max_n}")
        self._cfg = cfg
        w = widths(cfg)
        super().__init__({
            "start": In(1),
            "mode": In(1),
            "m": In(w["m"] + 1),
            "n": In(w["n"] + 1),
            "busy": Out(1),
            "done": Out(1),
            "lr": In(HYPER),
            "momentum": In(HYPER),
            "weight_decay": In(HYPER),
            "carry_en": Out(1),
            "carry_addr": Out(carry_addr_layout(cfg)),
            "carry_data": In(carry_data_layout(cfg)),
            "state_in": In(stream.Signature(bus_beat(64))),
            "state_out": Out(stream.Signature(bus_beat(64))),
            "o": Out(stream.Signature(out_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        lg = R.bit_length() - 1
        w = widths(cfg)
        MAXN = cfg.max_n

        uu = m.submodules.unit = UpdateUnit()
        m.d.comb += [uu.lr.eq(self.lr), uu.momentum.eq(self.momentum),
                     uu.weight_decay.eq(self.weight_decay)]
        buf = m.submodules.masters = Memory(shape=signed(32), depth=cfg.max_m * MAXN, init=[])
        wp = buf.write_port()
        rp = buf.read_port()

        # One task walk for both passes: ``outer`` tasks rows of ``groups`` tasks, element
        # ``(g << lg) + r`` of a task valid iff below ``inner`` (pass 0: m x n, pass 1: n x m).
        outer = Signal(w["m"] + 1)
        inner = Signal(w["m"] + 1)
        m.d.comb += [outer.eq(Mux(self.mode, self.n, self.m)),
                     inner.eq(Mux(self.mode, self.m, self.n))]
        groups = Signal(w["g"] + 1)
        m.d.comb += groups.eq((inner + R - 1) >> lg)

        running = Signal()
        m.d.comb += self.busy.eq(running)
        m.d.sync += self.done.eq(0)

        def walker(name):
            a = Signal(w["m"] + 1, name=f"{name}_a")
            g = Signal(w["g"] + 1, name=f"{name}_g")
            r = Signal(range(R), name=f"{name}_r")
            fin = Signal(name=f"{name}_done")
            col = Signal(w["m"] + 2, name=f"{name}_col")
            last_el = Signal(name=f"{name}_last_el")  # last element of the task
            last_task = Signal(name=f"{name}_last_task")  # last task of the pass
            m.d.comb += [col.eq((g << lg) + r),
                         last_el.eq((r == R - 1) | (col + 1 >= inner)),
                         last_task.eq((g + 1 == groups) & (a + 1 == outer))]

            def step():
                m.d.sync += r.eq(r + 1)
                with m.If(last_el):
                    m.d.sync += r.eq(0)
                    with m.If(g + 1 == groups):
                        m.d.sync += [g.eq(0), a.eq(a + 1)]
                        with m.If(last_task):
                            m.d.sync += fin.eq(1)
                    with m.Else():
                        m.d.sync += g.eq(g + 1)

            def reset():
                return [a.eq(0), g.eq(0), r.eq(0), fin.eq(0)]
            return a, g, r, fin, col, last_el, last_task, step, reset

        # ---- input side: pass 0 task reads and elements into the unit; pass 1 buffer reads --
        in_a, in_g, in_r, in_done, col, _, _, in_step, in_reset = walker("in")
        in_have = Signal()  # carry data of task (in_a, in_g) is on carry_data
        in_read = Signal()  # a carry read was issued last cycle
        acc = self.carry_data
        st = self.state_in.payload.data

        def clamp(x):  # -2**31 read as -(2**31 - 1): only bit 0 changes
            return Cat(x[0] | (x == -(1 << 31)), x[1:]).as_signed()

        ui = uu.i.payload
        # element in_r of the task: word_select gives a mux tree (a Switch gave a pmux twice
        # the size)
        mant = Signal(signed(32))
        exp = Signal(16)
        m.d.comb += [mant.eq(acc.mant.as_value().word_select(in_r, 32)),
                     exp.eq(acc.exp.as_value().word_select(in_r, len(acc.exp[0])))]
        m.d.comb += [ui.grad_mant.eq(mant), ui.grad_exp.eq(exp),
                     ui.w.eq(clamp(st[:32].as_signed())), ui.v.eq(clamp(st[32:].as_signed()))]
        m.d.comb += [self.carry_addr.row.eq(in_a), self.carry_addr.grp.eq(in_g)]
        m.d.comb += rp.addr.eq(col * MAXN + in_a)  # pass 1: master (row col, column in_a)
        rd = Signal()  # pass 1: a buffer read was issued last cycle
        m.d.sync += rd.eq(0)
        with m.If(in_read):
            m.d.sync += [in_read.eq(0), in_have.eq(1)]
        with m.If(running & ~in_done):
            with m.If(self.mode):
                m.d.sync += rd.eq(1)
                in_step()
            with m.Elif(~in_have & ~in_read):
                m.d.comb += self.carry_en.eq(1)
                m.d.sync += in_read.eq(1)
            with m.Elif(in_have):
                m.d.comb += [uu.i.valid.eq(self.state_in.valid),
                             self.state_in.ready.eq(uu.i.ready)]
                with m.If(uu.i.valid & uu.i.ready):
                    in_step()
                    with m.If(in_r == R - 1):
                        m.d.sync += in_have.eq(0)
                    with m.If(col + 1 >= inner):
                        m.d.sync += in_have.eq(0)

        # ---- output side: state out, master buffer, one task register for both passes -------
        out_a, out_g, out_r, out_done, ocol, out_last_el, out_last_task, out_step, out_reset = \
            walker("out")
        uo = uu.o.payload
        m.d.comb += [
            self.state_out.valid.eq(uu.o.valid & ~self.mode),
            self.state_out.payload.data.eq(Cat(uo.w, uo.v)),
            self.state_out.payload.keep.eq(0xFF),
            self.state_out.payload.last.eq(out_last_task & out_last_el),
            uu.o.ready.eq(self.state_out.ready & ~self.mode),
            wp.addr.eq(out_a * MAXN + ocol),
            wp.data.eq(uo.w),
        ]
        ev = Signal()  # an element for the task register: pass 0 from the unit, 1 from the buffer
        m.d.comb += ev.eq(Mux(self.mode, rd, uu.o.valid & uu.o.ready))
        m.d.comb += wp.en.eq(uu.o.valid & uu.o.ready)
        d = Signal(signed(32))
        m.d.comb += d.eq(Mux(self.mode, rp.data, uo.w))
        # Entry r is written by element r; the task's element 0 clears the others (a ragged
        # task leaves them 0). The beat is read in the cycle after the task's last element,
        # before element 0 of the next task can change the register.
        o_valid = Signal()
        o_row = Signal(w["m"])
        o_grp = Signal(w["g"])
        # reset-less: the flip-flops' set/reset input then clears them (no LUT per bit)
        task = Signal(data.ArrayLayout(signed(32), R), reset_less=True)
        have = Signal(R, reset_less=True)  # entry r holds an element of the task
        m.d.sync += o_valid.eq(0)
        with m.If(ev):
            out_step()
            for r in range(R):
                with m.If(out_r == r):
                    m.d.sync += [task[r].eq(d), have[r].eq(1)]
                if r:
                    with m.If(out_r == 0):
                        m.d.sync += [task[r].eq(0), have[r].eq(0)]
            with m.If(out_last_el):
                m.d.sync += [o_valid.eq(1), o_row.eq(out_a), o_grp.eq(out_g)]

        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.row.eq(o_row),
                     self.o.payload.grp.eq(o_grp)]
        for r in range(R):
            m.d.comb += [self.o.payload.mant[r].eq(task[r]),
                         self.o.payload.exp[r].eq(Mux(have[r], MASTER_EA, 0))]

        # ---- control -------------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [running.eq(1), in_have.eq(0), in_read.eq(0), *in_reset(), *out_reset()]
        with m.Elif(running):
            with m.If(out_done & ~o_valid):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m
