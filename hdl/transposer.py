"""Transposer: re-blocks a BFP8 row tile along its other axis, bit-exact with ``gemm.reblock``.

WG reduces over the samples ``N`` (``golden.gemm.wg``), but activations and errors are stored
blocked along their channels: ``t`` is ``N x C`` with blocks of 16 along ``C``. The transposer
takes such a tile in row-major block order and emits ``golden.gemm.reblock(t)``, the ``C x N``
tensor blocked along ``N`` (``N`` zero-padded to a multiple of 16), also in row-major block
order: the form the engine's loaders take for WG.

Storage: 16 banks of 16-bit words (an 8-bit mantissa and its row's 8-bit exponent), one word
per tile element, ``max_rows * max_cblocks`` words per bank, each bank with one synchronous
write and one synchronous (non-transparent) read port: block RAM on iCE40 (256 x 16) and ECP5
(1024 x 18). The layout is skewed: element ``(r, j)`` of the 16 x 16 square ``(nb, cb)`` (row
``16 nb + r``, column ``16 cb + j``) is in bank ``(r + j) % 16`` at address ``16 (nb
max_cblocks + cb) + r``. An input block (one row ``r``) writes one word to every bank at the
same address (its 16 mantissas rotated by ``r``); output block ``(16 cb + j, nb)`` (one column
``j``) reads one word from every bank, bank ``b`` at ``r = (b - j) % 16``, and rotates the
re-quantized lanes back by ``j``. Fill and drain never overlap, so both rotations share one
4-stage barrel rotator.

Re-quantization (``quantize_exact`` of the 16 values ``m_r * 2**(E_r - 133)``, specialised to
8-bit mantissas): a value is nonzero iff ``m != 0``, its row is below ``rows`` and ``K_r = E_r
+ floor(log2|m_r|) >= 7`` (``|v| >= 2**-126``, else it flushes to zero). With ``K`` the largest
such key, the block's exponent is ``min(K - 6, 254)`` (254: saturation, only reachable with
``E = 255`` inputs) or 0 if there is none, and each mantissa is ``m * 2**(6 - s)``, ``s =
E_out + 6 - E_r``, rounded half to even (an arithmetic shift, then the half and sticky bits) and
clamped to +-127. No ``BFPConverter``: the values are 8-bit, not 32-bit accumulators.

Phases: *fill* takes ``rows * cblocks`` blocks (one per cycle), then *drain* emits ``16 *
cblocks * ceil(rows / 16)`` blocks (one per cycle while ``o`` is ready; latency 3: the read, the
exponent stage, the mantissa stage; the whole pipeline stalls while ``o`` is valid and not
ready), ``busy`` falls after the last block has left. ``start`` begins the next tile (it must
not come while ``busy``). ``rows`` and ``cblocks`` must be set before ``start`` and held during
the tile. Mantissa -128 is not a BFP8 value (it reads as 0).

**Fewer lanes** (``lanes = L`` of 8, 4, 2, 1; ``P = 16 / L`` steps a block; the above is
``lanes = 16``). Same results, ``L`` values handled per cycle, in and out. Storage: ``L`` lane
memories of ``P max_rows max_cblocks`` words (the same bits as the 16 banks); lane memory ``l``
holds the banks ``(G, l)``, ``G = 0 .. P - 1``, word ``a`` of bank ``G`` at ``P a + G``. The
skew is two-level: element ``(r, c)`` of a square is in bank ``(G, l)``, ``G = (c // L + r //
L) % P``, ``l = (c + r) % L``, word ``16 (nb max_cblocks + cb) + r``, so any ``L`` consecutive
elements of a row or of a column are in different lane memories. Each lane memory has a
read/write port (fill writes, the key pass reads) and a read port (the mantissa pass): one
set of block RAMs on ECP5 (16 DP16KDs for ``Transposer(256, 4)``, as with 16 lanes), two
copies on iCE40 (whose EBRs have one read port).

* Fill: a block takes ``P`` cycles (``i.ready`` in the last); step ``s`` writes columns ``L s
  .. L s + L - 1`` to bank group ``G = (s + r // L) % P``, rotated by ``r % L`` (an ``L``-lane
  rotator).
* Drain, output block ``(c, nb)``, ``c = 16 ccb + j``, ``j = L g + i``. Key pass: step ``s``
  reads bank group ``s`` (rows ``L ((s - g) % P) + (l - i) % L``) and folds its ``L`` keys
  into a running maximum, the block exponent after the last step, and records their ``nz``.
  Mantissa pass, the previous block's at the same time: step ``s`` reads bank group ``(s + g)
  % P``, which holds output lanes ``L s .. L s + L - 1`` (rotated by ``i``), and re-quantizes
  them into the output register, valid after the last step. Both passes and the output stall
  while ``o`` is valid and not ready.

A tile of ``F`` input and ``D`` output blocks takes ``P (F + D) + P + 2`` cycles without
bubbles or back-pressure (``F + D + 3`` with 16 lanes). Per value, ``L`` of each: the key
(``|m|``, ``floor(log2|m|)``, ``E + log2``, flush test), the key maximum, the mantissa stage
(shift, round half to even, clamp); plus two ``L``-lane rotators and no hold registers or
lane multiplexers (the lane memories' addresses select the group).
"""

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bfp_converter import LANES
from .bfp_layouts import BFP_BLOCK, BLOCK, reject

__all__ = ["Transposer"]

_WORD = data.StructLayout({"mant": 8, "exp": 8})


def _rotate(m, lanes, amount, width=BLOCK):
    """``out[b] = lanes[(b - amount) % width]``: a barrel rotator of ``width`` byte lanes."""
    for k in range(width.bit_length() - 1):
        step = 1 << k
        nxt = []
        for b in range(width):
            sig = Signal(8, name=f"rot{k}_{b}")
            m.d.comb += sig.eq(Mux(amount[k], lanes[(b - step) % width], lanes[b]))
            nxt.append(sig)
        lanes = nxt
    return lanes


def _key(m, mant, exp, live, name):
    """``(nz, kz)``: is the value nonzero after flushing, and its key ``E + floor(log2|m|)``
    (0 if not ``nz``)."""
    mag = Signal(7, name=f"mag{name}")
    m.d.comb += mag.eq(Mux(mant[7], -mant, mant)[:7])
    log2 = Signal(range(7), name=f"log2_{name}")
    for k in range(7):
        with m.If(mag[k]):
            m.d.comb += log2.eq(k)
    key = Signal(9, name=f"key{name}")
    m.d.comb += key.eq(exp + log2)
    nz = Signal(name=f"nz{name}")
    m.d.comb += nz.eq(live & (mag != 0) & (key >= 7))
    kz = Signal(9, name=f"kz{name}")
    m.d.comb += kz.eq(Mux(nz, key, 0))
    return nz, kz


def _max(m, keys):
    """The largest of ``keys`` (9-bit), a comparator tree."""
    keys = list(keys)
    while len(keys) > 1:
        nxt = [Signal(9) for _ in range(len(keys) // 2)]
        for mx, a, b in zip(nxt, keys[0::2], keys[1::2], strict=False):
            m.d.comb += mx.eq(Mux(a > b, a, b))
        keys = nxt + keys[2 * len(nxt):]
    return keys[0]


def _block_exp(m, kmax):
    """The block exponent for the largest key ``kmax`` (0: no nonzero value)."""
    e_out = Signal(8)
    m.d.comb += e_out.eq(Mux(kmax == 0, 0, Mux(kmax > 260, 254, kmax - 6)))
    return e_out


def _mantissa(m, mant, exp, nz, e_q, name):
    """The re-quantized mantissa of ``mant * 2**(exp - 133)`` in a block of exponent ``e_q``."""
    s = Signal(10, name=f"s{name}")  # E_out + 6 - E_r: < 16 unless the value is < 1/2
    m.d.comb += s.eq(e_q + 6 - exp)
    # m * 2**(6 - s) with 8 fraction bits; round half to even from the floor
    v = Signal(signed(22), name=f"v{name}")
    m.d.comb += v.eq(Cat(Const(0, 14), mant).as_signed() >> s[:4])
    # rounding only for s >= 7 (|q| <= 64); |q| > 127 only at s = 5 (saturation,
    # E = 255), where q = 2 m is exact: clamp to +-127
    q = Signal(8, name=f"q{name}")
    m.d.comb += q.eq(v[8:16] + (v[7] & ((v[:7] != 0) | v[8])))
    over = v[16] ^ v[15] | (v[8:17] == 0x180)
    qc = Mux(over, Mux(v[16], 0x81, 0x7F), q)
    out = Signal(8, name=f"out{name}")
    m.d.comb += out.eq(Mux(nz & (s[4:] == 0), qc, 0))
    return out


def _drain_position(m, rows, nbs, mcb):
    """The drain's position registers: ``nb_total`` row blocks of the tile, the column block
    ``ccb``, the column ``j`` in it, the row block ``nb`` and ``more`` (a block is still to be
    started)."""
    nb_total = Signal(range(nbs + 1))
    m.d.comb += nb_total.eq((rows + BLOCK - 1) >> 4)
    return (nb_total, Signal(range(mcb + 1), name="ccb"), Signal(4, name="j"),
            Signal(range(nbs + 1), name="nb"), Signal(name="more"))


def _step_fill(m, n, cb, cblocks, rows):
    """The fill's next input position (``cb`` fastest, then the row ``n``); the returned
    condition is true for the tile's last block."""
    with m.If(cb + 1 < cblocks):
        m.d.sync += cb.eq(cb + 1)
    with m.Else():
        m.d.sync += [cb.eq(0), n.eq(n + 1)]
    return (cb + 1 >= cblocks) & (n + 1 >= rows)


def _step_position(m, nb, j, ccb, more, nb_total, cblocks):
    """The drain's next output position: ``nb`` fastest, then ``j``, then ``ccb``; ``more``
    falls after the last."""
    with m.If(nb + 1 < nb_total):
        m.d.sync += nb.eq(nb + 1)
    with m.Else():
        m.d.sync += nb.eq(0)
        with m.If(j == BLOCK - 1):
            with m.If(ccb + 1 < cblocks):
                m.d.sync += ccb.eq(ccb + 1)
            with m.Else():
                m.d.sync += more.eq(0)
        m.d.sync += j.eq(j + 1)


class _Requantizer(Elaboratable):
    """Re-quantizes 16 BFP8 values ``mant[r] * 2**(exp[r] - 133)`` (``live[r]`` else 0).

    ``pipelined``: a register stage (enabled by ``en``) between the block exponent and the
    mantissas; else all combinational. Outputs ``e_out`` and ``out`` (``BFP_BLOCK`` fields).
    """

    def __init__(self, pipelined: bool):
        self._pipelined = pipelined
        self.mant = Signal(data.ArrayLayout(8, BLOCK))
        self.exp = Signal(data.ArrayLayout(8, BLOCK))
        self.live = Signal(BLOCK)
        self.en = Signal()
        self.e_out = Signal(8)
        self.out = Signal(data.ArrayLayout(8, BLOCK))

    def elaborate(self, platform):
        m = Module()
        stage = m.d.sync if self._pipelined else m.d.comb

        keys = []
        lanes = []
        for r in range(BLOCK):
            nz, kz = _key(m, self.mant[r], self.exp[r], self.live[r], r)
            keys.append(kz)
            lanes.append((self.mant[r], self.exp[r], nz))
        e_out = _block_exp(m, _max(m, keys))

        # ---- stage: block exponent + the lanes --------------------------------------------
        e_q = Signal(8)
        held = []
        with m.If(self.en if self._pipelined else 1):
            stage += e_q.eq(e_out)
            for r, (mant, exp, nz) in enumerate(lanes):
                hm, he, hn = (Signal(8, name=f"h_mant{r}"), Signal(8, name=f"h_exp{r}"),
                              Signal(name=f"h_nz{r}"))
                stage += [hm.eq(mant), he.eq(exp), hn.eq(nz)]
                held.append((hm, he, hn))
        m.d.comb += self.e_out.eq(e_q)

        for r, (mant, exp, nz) in enumerate(held):
            m.d.comb += self.out[r].eq(_mantissa(m, mant, exp, nz, e_q, r))
        return m


class Transposer(wiring.Component):
    """Re-blocks an ``N x C`` BFP8 tile into ``C x N`` blocked along ``N`` (module docstring).

    Parameters
    ----------
    max_rows : int
        Largest ``N`` (a multiple of 16).
    max_cblocks : int
        Largest ``C / 16``.
    lanes : int
        Values re-quantized per cycle (keyword-only): 16 (the default, one block per cycle in
        and out) or 8, 4, 2, 1 (one block every ``16 // lanes`` cycles in and out, less area;
        module docstring). The results are the same.

    Attributes
    ----------
    i : In(stream.Signature(BFP_BLOCK))
        The input tile, row-major blocks.
    o : Out(stream.Signature(BFP_BLOCK))
        The re-blocked tile, row-major blocks.
    rows : In(range(max_rows + 1))
        ``N`` of this tile (1 .. max_rows).
    cblocks : In(range(max_cblocks + 1))
        ``C / 16`` of this tile (1 .. max_cblocks).
    start : In(1)
        Begin a tile (one cycle).
    busy : Out(1)
        A tile is being filled or drained.

    Raises
    ------
    ValueError
        If ``max_rows`` is not a positive multiple of 16, ``max_cblocks`` not a positive
        integer, or ``lanes`` not one of :data:`hdl.bfp_converter.LANES`.
    """

    def __init__(self, max_rows: int, max_cblocks: int, *, lanes: int = BLOCK):
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 16 \
                or max_rows % 16:
            reject(self, ValueError(
                f"Maximum rows must be a positive multiple of 16, not {max_rows!r}"))
        if isinstance(max_cblocks, bool) or not isinstance(max_cblocks, int) \
                or max_cblocks < 1:
            reject(self, ValueError(
                f"Maximum column blocks must be a positive integer, not {max_cblocks!r}"))
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in LANES:
            reject(self, ValueError(
                f"Lanes must be one of {', '.join(map(str, LANES))}, not {lanes!r}"))
        self._max_rows = max_rows
        self._max_cblocks = max_cblocks
        self._lanes = lanes
        super().__init__({
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "rows": In(range(max_rows + 1)),
            "cblocks": In(range(max_cblocks + 1)),
            "start": In(1),
            "busy": Out(1),
        })

    @property
    def max_rows(self):
        return self._max_rows

    @property
    def max_cblocks(self):
        return self._max_cblocks

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        if self._lanes < BLOCK:
            return self._elaborate_narrow()
        m = Module()
        nbs = self._max_rows // BLOCK
        mcb = self._max_cblocks
        depth = self._max_rows * mcb

        banks = []
        for b in range(BLOCK):
            mem = Memory(shape=_WORD, depth=depth, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.write_port(), mem.read_port()))

        m.submodules.rq = rq = _Requantizer(pipelined=True)

        filling = Signal()
        draining = Signal()
        # one rotator, shared: fill rotates input lanes into banks (by r), drain rotates the
        # re-quantized bank lanes back into rows (by -j)
        rot_in = [Mux(filling, self.i.payload.mant[b], rq.out[b]) for b in range(BLOCK)]
        rot_amount = Signal(4)
        rotated = _rotate(m, rot_in, rot_amount)
        rd_valid = Signal()  # the read ports hold words for the requantizer
        rq_valid = Signal()  # the requantizer's register stage holds a block
        m.d.comb += self.busy.eq(filling | draining | rd_valid | rq_valid | self.o.valid)
        advance = Signal()  # the whole pipeline moves
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # ---- fill: row n = 16 nb + r, block cb; bank b gets lane (b - r) % 16 ---------------
        n = Signal(range(self._max_rows + 1))
        cb = Signal(range(mcb + 1))
        m.d.comb += self.i.ready.eq(filling)
        waddr = Signal(range(depth))
        m.d.comb += waddr.eq(Cat(n[:4], (n >> 4) * mcb + cb))
        for wp, rot in zip((wp for wp, _ in banks), rotated, strict=True):
            m.d.comb += [wp.addr.eq(waddr), wp.data.exp.eq(self.i.payload.exp),
                         wp.data.mant.eq(rot), wp.en.eq(self.i.valid & filling)]

        # ---- drain: output block (c, nb), c = 16 ccb + j; bank b holds row (b - j) % 16 -------
        nb_total, ccb, j, nb, more = _drain_position(m, self.rows, nbs, mcb)
        rd_j = Signal(4)
        rq_j = Signal(4)
        m.d.comb += rot_amount.eq(Mux(filling, n[:4], -rq_j))
        left = Signal(range(self._max_rows + 1))  # rows - 16 nb of the words read
        base = Signal(range(nbs * mcb))
        m.d.comb += base.eq(nb * mcb + ccb)
        for b, (_, rp) in enumerate(banks):
            row = Signal(4, name=f"rrow{b}")
            m.d.comb += row.eq(b - j)
            m.d.comb += [rp.addr.eq(Cat(row, base)), rp.en.eq(advance)]

        with m.If(advance):
            m.d.sync += [rd_valid.eq(draining & more), rd_j.eq(j),
                         left.eq(self.rows - Cat(Signal(4), nb))]
            with m.If(draining & more):
                _step_position(m, nb, j, ccb, more, nb_total, self.cblocks)

        for b, (_, rp) in enumerate(banks):
            row = Signal(4, name=f"qrow{b}")
            m.d.comb += row.eq(b - rd_j)
            m.d.comb += [rq.mant[b].eq(rp.data.mant), rq.exp[b].eq(rp.data.exp),
                         rq.live[b].eq((left > BLOCK - 1) | (row < left[:4]))]
        m.d.comb += rq.en.eq(advance)
        with m.If(advance):
            m.d.sync += [rq_valid.eq(rd_valid), rq_j.eq(rd_j), self.o.valid.eq(rq_valid),
                         self.o.payload.exp.eq(rq.e_out)]
            # output lane r is bank (r + j) % 16
            m.d.sync += self.o.payload.mant.eq(Cat(rotated))

        # ---- control -----------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [filling.eq(1), draining.eq(0), n.eq(0), cb.eq(0), rd_valid.eq(0)]
        with m.Elif(filling & self.i.valid):
            with m.If(_step_fill(m, n, cb, self.cblocks, self.rows)):
                m.d.sync += [filling.eq(0), draining.eq(1), more.eq(1), ccb.eq(0),
                             j.eq(0), nb.eq(0)]
        with m.Elif(draining & ~more):
            m.d.sync += draining.eq(0)
        return m

    def _elaborate_narrow(self):
        """``lanes < 16`` (module docstring): fill and drain take ``P = 16 / lanes`` steps a
        block."""
        m = Module()
        L = self._lanes
        P = BLOCK // L
        lw = L.bit_length() - 1  # log2 L
        pw = 4 - lw  # log2 P
        nbs = self._max_rows // BLOCK
        mcb = self._max_cblocks
        depth = self._max_rows * mcb

        # lane memory l holds banks (G, l), G = 0 .. P - 1: word a of bank G at P a + G. Port
        # A writes (fill) or reads for the key pass (drain), port B reads for the mantissa pass.
        lmems = []
        for lane in range(L):
            # Port B's register is written out (an asynchronous read port and a flip-flop) so
            # that Yosys's ``no_rw_check`` applies to it: its read-during-write behaviour is
            # then free (fill and drain never overlap) and port A can be shared by the write
            # port and the key-pass read port: one RAM, not two copies.
            mem = Memory(shape=_WORD, depth=P * depth, init=[], attrs={"no_rw_check": 1})
            m.submodules[f"lane{lane}"] = mem
            lmems.append((mem.write_port(), mem.read_port(), mem.read_port(domain="comb")))

        filling = Signal()
        draining = Signal()
        step = Signal(pw)  # lane group of the block in each stage
        last = Signal()
        m.d.comb += last.eq(step == P - 1)
        nxt = Signal(pw)  # the step after this one
        m.d.comb += nxt.eq(step + 1)
        rd_valid = Signal()  # the key pass has a block
        h_valid = Signal()  # the mantissa pass has a block
        m.d.comb += self.busy.eq(filling | draining | rd_valid | h_valid | self.o.valid)
        advance = Signal()  # the drain pipeline moves
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # ---- fill: row n = 16 nb + r, step s: columns c = L s + i go to bank group
        # G = (s + r // L) % P, lane (c + r) % L ------------------------------------------------
        n = Signal(range(self._max_rows + 1))
        cb = Signal(range(mcb + 1))
        m.d.comb += self.i.ready.eq(filling & last)
        waddr = Signal(range(depth))
        m.d.comb += waddr.eq(Cat(n[:4], (n >> 4) * mcb + cb))
        group = Signal(data.ArrayLayout(8, L))  # the step's L input mantissas
        with m.Switch(step):
            for g in range(P):
                with m.Case(g):
                    m.d.comb += group.eq(self.i.payload.mant.as_value()[8 * L * g:8 * L * (g + 1)])
        rot = _rotate(m, [group[i] for i in range(L)], n[:lw], L)
        wgroup = Signal(pw)
        m.d.comb += wgroup.eq(step + n[lw:4])

        # ---- drain: output block (c, nb), c = 16 ccb + j, j = L g + i: bank (G, l) holds row
        # L ((G - g) % P) + (l - i) % L -----------------------------------------------------
        nb_total, ccb, j, nb, more = _drain_position(m, self.rows, nbs, mcb)
        issue = Signal()  # the key pass takes the next block
        m.d.comb += issue.eq(advance & last)
        base = Signal(range(nbs * mcb))
        m.d.comb += base.eq(nb * mcb + ccb)

        rd_j = Signal(4)
        rd_base = Signal.like(base)
        left = Signal(range(self._max_rows + 1))  # rows - 16 nb of the key pass's block
        with m.If(issue):
            m.d.sync += [rd_valid.eq(draining & more), rd_j.eq(j), rd_base.eq(base),
                         left.eq(self.rows - Cat(Signal(4), nb))]
            with m.If(draining & more):
                _step_position(m, nb, j, ccb, more, nb_total, self.cblocks)

        # key pass: step s reads bank group s (the read for step s goes out in step s - 1:
        # the next block's group 0 in the last step)
        k_j = Mux(last, j, rd_j)
        k_base = Mux(last, base, rd_base)
        k_hi = Signal(pw)  # (G - g) % P, G = the step read for
        m.d.comb += k_hi.eq(nxt - (k_j >> lw))
        # mantissa pass: step s reads bank group (s + g) % P, rows L s + (l - i) % L
        h_j = Signal(4)
        h_base = Signal.like(base)
        m_j = Mux(last, rd_j, h_j)
        m_base = Mux(last, rd_base, h_base)
        m_g = Signal(pw)
        m.d.comb += m_g.eq(nxt + (m_j >> lw))
        k_words, m_words = [], []
        for lane, (wp, kp, mp) in enumerate(lmems):
            k_row = Cat((lane - k_j)[:lw], k_hi)
            a_addr = Signal(range(P * depth), name=f"a_addr{lane}")
            m.d.comb += a_addr.eq(Mux(filling, Cat(wgroup, waddr), Cat(nxt, k_row, k_base)))
            m.d.comb += [wp.addr.eq(a_addr), wp.data.exp.eq(self.i.payload.exp),
                         wp.data.mant.eq(rot[lane]), wp.en.eq(self.i.valid & filling),
                         kp.addr.eq(a_addr), kp.en.eq(filling | advance)]
            m_row = Cat((lane - m_j)[:lw], nxt)
            m_word = Signal(_WORD, name=f"m_word{lane}")
            m.d.comb += mp.addr.eq(Cat(m_g, m_row, m_base))
            with m.If(advance):
                m.d.sync += m_word.eq(mp.data)
            k_words.append(kp.data)
            m_words.append(m_word)

        nzs, keys = [], []
        for lane in range(L):
            row = Signal(4, name=f"krow{lane}")
            m.d.comb += row.eq(Cat((lane - rd_j)[:lw], (step - (rd_j >> lw))[:pw]))
            live = (left > BLOCK - 1) | (row < left[:4])
            nz, kz = _key(m, k_words[lane].mant, k_words[lane].exp, live, f"k{lane}")
            nzs.append(nz)
            keys.append(kz)
        acc = Signal(9)  # the largest key of the steps so far
        kmax = _max(m, [Mux(step == 0, 0, acc)] + keys)
        nz_acc = Signal(BLOCK)  # nz of the steps so far, by bank
        with m.If(advance):
            m.d.sync += acc.eq(kmax)
            with m.Switch(step):
                for g in range(P):
                    with m.Case(g):
                        m.d.sync += nz_acc[L * g:L * (g + 1)].eq(Cat(nzs))

        # mantissa pass: step s makes output lanes L s .. L s + L - 1, lane l is output lane
        # L s + (l - i) % L
        h_nz = Signal(BLOCK)
        h_e = Signal(8)
        e_new = _block_exp(m, kmax)
        with m.If(issue):
            m.d.sync += [h_valid.eq(rd_valid), h_j.eq(rd_j), h_base.eq(rd_base), h_e.eq(e_new),
                         h_nz.eq(Cat(nz_acc[:BLOCK - L], Cat(nzs)))]
        hgroup = Signal(pw)
        m.d.comb += hgroup.eq(step + (h_j >> lw))
        m_nz = Signal(L)
        with m.Switch(hgroup):
            for g in range(P):
                with m.Case(g):
                    m.d.comb += m_nz.eq(h_nz[L * g:L * (g + 1)])
        outs = [_mantissa(m, m_words[lane].mant, m_words[lane].exp, m_nz[lane], h_e, f"m{lane}")
                for lane in range(L)]
        # output lane L s + t is lane (t + i) % L
        placed = _rotate(m, outs, (-h_j[:lw])[:lw], L)
        with m.If(advance):
            with m.Switch(step):
                for g in range(P):
                    with m.Case(g):
                        m.d.sync += self.o.payload.mant.as_value()[8 * L * g:8 * L * (g + 1)].eq(
                            Cat(placed))
            m.d.sync += self.o.valid.eq(h_valid & last)
            with m.If(last):
                m.d.sync += self.o.payload.exp.eq(h_e)

        # ---- control -----------------------------------------------------------------------
        with m.If(filling):
            with m.If(self.i.valid):
                m.d.sync += step.eq(nxt)
        with m.Elif(advance):
            m.d.sync += step.eq(nxt)
        with m.If(self.start):
            m.d.sync += [filling.eq(1), draining.eq(0), n.eq(0), cb.eq(0), rd_valid.eq(0),
                         step.eq(0)]
        with m.Elif(filling & self.i.valid & last):
            with m.If(_step_fill(m, n, cb, self.cblocks, self.rows)):
                # the first block's key pass starts in the first cycle of the drain
                m.d.sync += [filling.eq(0), draining.eq(1), more.eq(1), ccb.eq(0),
                             j.eq(0), nb.eq(0), step.eq(P - 1)]
        with m.Elif(draining & ~more):
            m.d.sync += draining.eq(0)
        return m
