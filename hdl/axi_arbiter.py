"""AXI4 interconnect: several managers (the DMA engines) share one AXI4 manager port to DRAM.

:class:`AXI4Arbiter` has ``n_ports`` subordinate ports ``s[0..n-1]`` (each
``In(AXI4Signature)``, so a :class:`hdl.dma.DMAReader` or :class:`hdl.dma.DMAWriter` ``axi``
port connects with :func:`amaranth.lib.wiring.connect`) and one manager port ``m``.

**Reads.** AR requests are granted round-robin, one burst per grant (the port after the last
winner has the highest priority, so a waiting port sees at most ``n_ports - 1`` other bursts
granted before its own). The winner's port index (and its ``arid``) goes into an order FIFO of
``max_outstanding`` entries; R beats go back to the port at the head of that FIFO, which is
popped on ``rlast``. This is correct because every burst is issued on ``m`` with ID 0, and a
subordinate returns same-ID read data in request order.

**Writes.** AW requests are granted round-robin per burst as well, but only while the W channel
is free: the AW handshake locks W to the winner until its ``wlast`` beat, so write data reach
memory in AW order and at most one burst is between its AW and its last W beat. The winner's
index (and ``awid``) goes into a second order FIFO that routes the B responses (also sent with
ID 0, so they come back in AW order).

**Deadlock freedom.** Because W stays locked to the AW winner until ``wlast``, the write side
progresses only if a manager whose AW was accepted then delivers its burst's data. A
:class:`~hdl.dma.DMAWriter` issues AW only once the whole burst is in its FIFO (a full burst,
or the rest of the stream after ``last``), so this holds for it; a manager that issues AW before
its data are available can stall the other writers (never the readers) until they arrive. AW is
never made to wait for WVALID (a DMAWriter raises WVALID only after its AW handshake). On the
read side, R data come back in request order on one ID, so a reader whose consumer stops taking
beats holds up the readers whose bursts were granted after its own: two readers whose consumers
depend on each other need enough buffering downstream for their bursts in flight.

**Timing.** The data paths (R, W, B) are routed combinationally through the order FIFOs'
heads: no added latency. AR and AW are combinational as well (no register stage): the grant is
held while the chosen request waits for ``arready``/``awready``, so ``m`` sees a stable request.
Between two write bursts the W channel is idle for one cycle (the lock is released the cycle
after ``wlast``), the same cycle the :class:`~hdl.dma.DMAWriter` needs before its next AW
anyway.

**IDs.** ``m.arid``/``m.awid`` are always 0; a port gets back the ID it sent in ``rid``/``bid``.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature

__all__ = ["AXI4Arbiter"]

_AR = ("araddr", "arlen", "arsize", "arburst")
_AW = ("awaddr", "awlen", "awsize", "awburst")
_W = ("wdata", "wstrb", "wlast")


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


class AXI4Arbiter(wiring.Component):
    """Round-robin AXI4 arbiter: ``n_ports`` managers onto one AXI4 manager port.

    Parameters
    ----------
    n_ports : int
        Subordinate ports (1 to 16).
    addr_width : int
        Address bits (1 to 64).
    data_width : int
        32, 64 or 128.
    id_width : int
        ID bits of every port (1 to 8); ``m`` issues ID 0 only.
    max_outstanding : int
        Depth of each order FIFO (1 to 256): read bursts granted but not yet finished (``rlast``
        not yet delivered), and write bursts granted whose B response has not been delivered.
        ``m`` stops issuing AR (AW) while its FIFO is full.

    Attributes
    ----------
    s : list of In(AXI4Signature(addr_width, data_width, id_width)), ``n_ports`` long
        Subordinate ports (flattened to ``s__0__araddr`` etc.).
    m : Out(AXI4Signature(addr_width, data_width, id_width))
        Manager port to memory.
    """

    def __init__(self, n_ports: int, addr_width: int = 32, data_width: int = 64, *,
                 id_width: int = 1, max_outstanding: int = 8):
        _check_int("Port count", n_ports, 1, 16)
        _check_int("Outstanding bursts", max_outstanding, 1, 256)
        sig = AXI4Signature(addr_width, data_width, id_width)  # validates the widths
        self._n_ports = n_ports
        self._addr_width = addr_width
        self._data_width = data_width
        self._id_width = id_width
        self._max_outstanding = max_outstanding
        super().__init__({"s": In(sig).array(n_ports), "m": Out(sig)})

    @property
    def n_ports(self):
        return self._n_ports

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    @property
    def id_width(self):
        return self._id_width

    @property
    def max_outstanding(self):
        return self._max_outstanding

    def _grant(self, m, ch, requests, enable):
        """Round-robin choice among ``requests``, held while the chosen request waits.

        Returns ``(sel, valid, fire)``: the chosen port, ``m``'s valid and the handshake.
        """
        n = self._n_ports
        ready = getattr(self.m, f"{ch}ready")
        last = Signal(range(n), name=f"{ch}_last", init=n - 1)  # the previous winner
        hold = Signal(name=f"{ch}_hold")  # offered last cycle and not taken: keep the choice
        held = Signal(range(n), name=f"{ch}_held")
        choice = Signal(range(n), name=f"{ch}_choice")
        with m.Switch(last):
            for prev in range(n):
                with m.Case(prev):
                    order = [(prev + 1 + k) % n for k in range(n)]
                    # later assignments win: walk from the lowest priority to the highest
                    for p in reversed(order):
                        with m.If(requests[p]):
                            m.d.comb += choice.eq(p)
        sel = Signal(range(n), name=f"{ch}_sel")
        m.d.comb += sel.eq(Mux(hold, held, choice))
        req = Signal(n, name=f"{ch}_req")
        m.d.comb += req.eq(sum(r << i for i, r in enumerate(requests)))
        valid = Signal(name=f"{ch}_valid")
        m.d.comb += valid.eq(req.bit_select(sel, 1) & enable)
        fire = valid & ready
        m.d.sync += [hold.eq(valid & ~ready), held.eq(sel)]
        with m.If(fire):
            m.d.sync += last.eq(sel)
        return sel, valid, fire

    def elaborate(self, platform):
        m = Module()
        n = self._n_ports
        s, mp = self.s, self.m
        idx_w = max(1, (n - 1).bit_length())

        def route(sel, names, src, dst):
            """``dst.name = src[sel].name`` for each name (a mux)."""
            with m.Switch(sel):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [getattr(dst, x).eq(getattr(src[i], x)) for x in names]

        # ---- reads -------------------------------------------------------------------------
        m.submodules.r_order = r_order = SyncFIFO(width=idx_w + self._id_width,
                                                  depth=self._max_outstanding)
        ar_sel, ar_valid, ar_fire = self._grant(m, "ar", [p.arvalid for p in s], r_order.w_rdy)
        route(ar_sel, _AR, s, mp)
        m.d.comb += [mp.arid.eq(0), mp.arvalid.eq(ar_valid)]
        for i, p in enumerate(s):
            m.d.comb += p.arready.eq(mp.arready & ar_valid & (ar_sel == i))
        arid = Signal(self._id_width)
        route(ar_sel, ["arid"], s, _Proxy(arid=arid))
        m.d.comb += [r_order.w_data.eq(ar_sel | (arid << idx_w)), r_order.w_en.eq(ar_fire)]

        r_port = r_order.r_data[:idx_w]
        r_head = r_order.r_rdy
        for i, p in enumerate(s):
            m.d.comb += [
                p.rid.eq(r_order.r_data[idx_w:]), p.rdata.eq(mp.rdata), p.rresp.eq(mp.rresp),
                p.rlast.eq(mp.rlast),
                p.rvalid.eq(mp.rvalid & r_head & (r_port == i)),
            ]
        with m.Switch(r_port):
            for i, p in enumerate(s):
                with m.Case(i):
                    m.d.comb += mp.rready.eq(p.rready & r_head)
        m.d.comb += r_order.r_en.eq(mp.rvalid & mp.rready & mp.rlast)

        # ---- writes ------------------------------------------------------------------------
        m.submodules.b_order = b_order = SyncFIFO(width=idx_w + self._id_width,
                                                  depth=self._max_outstanding)
        w_busy = Signal()  # W locked to w_port until its wlast
        w_port = Signal(range(n))
        aw_sel, aw_valid, aw_fire = self._grant(m, "aw", [p.awvalid for p in s],
                                                b_order.w_rdy & ~w_busy)
        route(aw_sel, _AW, s, mp)
        m.d.comb += [mp.awid.eq(0), mp.awvalid.eq(aw_valid)]
        for i, p in enumerate(s):
            m.d.comb += p.awready.eq(mp.awready & aw_valid & (aw_sel == i))
        awid = Signal(self._id_width)
        route(aw_sel, ["awid"], s, _Proxy(awid=awid))
        m.d.comb += [b_order.w_data.eq(aw_sel | (awid << idx_w)), b_order.w_en.eq(aw_fire)]

        # W: locked to the AW winner from the cycle after its AW until its wlast.
        route(w_port, _W, s, mp)
        w_src_valid = Signal()
        route(w_port, ["wvalid"], s, _Proxy(wvalid=w_src_valid))
        m.d.comb += mp.wvalid.eq(w_busy & w_src_valid)
        for i, p in enumerate(s):
            m.d.comb += p.wready.eq(mp.wready & w_busy & (w_port == i))
        with m.If(aw_fire):
            m.d.sync += [w_busy.eq(1), w_port.eq(aw_sel)]
        with m.Elif(mp.wvalid & mp.wready & mp.wlast):
            m.d.sync += w_busy.eq(0)

        # B: to the port at the head of the AW order.
        b_port = b_order.r_data[:idx_w]
        b_head = b_order.r_rdy
        for i, p in enumerate(s):
            m.d.comb += [
                p.bid.eq(b_order.r_data[idx_w:]), p.bresp.eq(mp.bresp),
                p.bvalid.eq(mp.bvalid & b_head & (b_port == i)),
            ]
        with m.Switch(b_port):
            for i, p in enumerate(s):
                with m.Case(i):
                    m.d.comb += mp.bready.eq(p.bready & b_head)
        m.d.comb += b_order.r_en.eq(mp.bvalid & mp.bready)
        return m


class _Proxy:
    """Attribute holder so :func:`route` can target plain signals."""

    def __init__(self, **signals):
        self.__dict__.update(signals)
