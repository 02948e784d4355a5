"""AXI4-Stream top around any element-stream component (the accelerator).

:class:`AxisTop` puts Xilinx-style AXI4-Stream ports on a component with an input stream ``i``
and an output stream ``o`` (``amaranth.lib.stream``), so that Vivado's IP Integrator infers a
slave interface ``s_axis`` and a master interface ``m_axis`` from the port names alone::

    s_axis_tdata  [8*ceil(W_in/8)-1:0]   in    one input value per transfer
    s_axis_tvalid, s_axis_tlast          in    TLAST on the last value of each window
    s_axis_tready                        out
    m_axis_tdata  [8*ceil(W_out/8)-1:0]  out   one result value per transfer
    m_axis_tvalid, m_axis_tlast          out   TLAST on the last value of each result
    m_axis_tready                        in
    event_tlast_unexpected               out   pulse: TLAST high on a value that is not a window's last
    event_tlast_missing                  out   pulse: TLAST low on a window's last value
    event_tdata_range                    out   pulse: TDATA not the sign/zero extension of a W_in-bit value
    input_error                          out   sticky: any event since reset

The handshakes pass straight through (no register slice: the AXI4-Stream top has the latency
and throughput of the component). TDATA is widened to whole bytes as AXI4-Stream requires: an
input value is the low ``W_in`` bits of ``s_axis_tdata`` (the upper bits must be its sign
extension, or zero for an unsigned input, else ``event_tdata_range``), an output value is sign-
or zero-extended into ``m_axis_tdata``.

Framing is positional: the component takes ``n_in`` values per window and gives ``n_out``
values per result; a counter of transfers decides where a window ends. TLAST is checked
against it, never used to realign: a misplaced TLAST raises an event (one cycle after the
transfer) and the sticky ``input_error``, and the stream stays framed by count until ``rst``
(which restarts the count at a window's first value).
"""
from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxisTop", "axis_width", "STATUS_PORTS"]

STATUS_PORTS = ("event_tlast_unexpected", "event_tlast_missing", "event_tdata_range",
                "input_error")


def axis_width(shape) -> int:
    """TDATA width of a payload shape: the payload width rounded up to whole bytes."""
    return -(-Shape.cast(shape).width // 8) * 8


class AxisTop(wiring.Component):
    """AXI4-Stream ports around ``core`` (a component with streams ``i`` and ``o``), framed as
    ``n_in`` input values per window and ``n_out`` output values per result."""

    def __new__(cls, core, n_in: int, n_out: int = 1, **kwargs):
        # checked before the object exists: a rejected top is not an unused elaboratable
        cls._check(core, n_in, n_out)
        return super().__new__(cls)

    @staticmethod
    def _check(core, n_in, n_out):
        if int(n_in) < 1 or int(n_out) < 1:
            raise ValueError(f"a window needs at least one input and one output value, "
                             f"got n_in={n_in}, n_out={n_out}")
        try:
            members = core.signature.members
            ishape = Shape.cast(members["i"].signature.members["payload"].shape)
            oshape = Shape.cast(members["o"].signature.members["payload"].shape)
        except (AttributeError, KeyError) as e:
            raise TypeError(f"the core must be a component with streams 'i' (In) and 'o' (Out) "
                            f"carrying a payload: {e!r}") from None
        return ishape, oshape

    def __init__(self, core, n_in: int, n_out: int = 1):
        ishape, oshape = self._check(core, n_in, n_out)
        self.core, self.n_in, self.n_out = core, int(n_in), int(n_out)
        self.in_shape, self.out_shape = ishape, oshape
        super().__init__({
            "s_axis_tdata": In(axis_width(ishape)),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(axis_width(oshape)),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "event_tlast_unexpected": Out(1),
            "event_tlast_missing": Out(1),
            "event_tdata_range": Out(1),
            "input_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        w_in = self.in_shape.width

        # input side: straight through, low W_in bits of TDATA
        value = self.s_axis_tdata[:w_in]
        if self.in_shape.signed:
            value = value.as_signed()
            in_range = self.s_axis_tdata.as_signed() == value
        else:
            in_range = self.s_axis_tdata == value
        m.d.comb += [core.i.payload.eq(value), core.i.valid.eq(self.s_axis_tvalid),
                     self.s_axis_tready.eq(core.i.ready)]

        # output side: sign/zero extension into whole bytes
        m.d.comb += [self.m_axis_tdata.eq(core.o.payload), self.m_axis_tvalid.eq(core.o.valid),
                     core.o.ready.eq(self.m_axis_tready)]

        # framing by count: position of the next input value in its window, of the next output
        # value in its result
        pos = Signal(range(self.n_in))
        opos = Signal(range(self.n_out))
        last_in = pos == self.n_in - 1
        m.d.comb += self.m_axis_tlast.eq(opos == self.n_out - 1)

        take = self.s_axis_tvalid & self.s_axis_tready
        with m.If(take):
            m.d.sync += pos.eq(Mux(last_in, 0, pos + 1))
        with m.If(self.m_axis_tvalid & self.m_axis_tready):
            m.d.sync += opos.eq(Mux(self.m_axis_tlast, 0, opos + 1))

        unexpected = take & self.s_axis_tlast & ~last_in
        missing = take & ~self.s_axis_tlast & last_in
        out_of_range = take & ~in_range
        m.d.sync += [self.event_tlast_unexpected.eq(unexpected),
                     self.event_tlast_missing.eq(missing),
                     self.event_tdata_range.eq(out_of_range)]
        with m.If(unexpected | missing | out_of_range):
            m.d.sync += self.input_error.eq(1)
        return m
