"""Cycle limits of the stream simulators (sim/limits.py): derived from the design's own
cycles(), and a limit that is hit names the simulator, the design, the outputs that arrived
and what the formula expected. The regression of issue 18: the GHDL testbench sized its
timeout from the stream length, below the accelerator's latency for a window of few values."""
import numpy as np
import pytest
from amaranth import Module, signed
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.accelerator import Accelerator
from hw.amaranth_adapter import discard
from hw.plumbing import Fork
from model.synthetic import random_inputs, random_intmodel
from sim import tools
from sim.limits import MARGIN, SLACK, CycleLimit, SimulationTimeout

TOP = "intformer_top"
#: One feature, a short window: few input values per window, a long latency.
FEW = dict(features=1, window=4, d_model=8, heads=1, layers=1, ffn=16, norm="batchnorm",
           activation="relu")


class Stuck(wiring.Component):
    """Takes every input and never offers an output: a design that hangs."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(signed(8))), "o": Out(stream.Signature(signed(8)))})

    def cycles(self) -> int:
        return 5

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        m.d.sync += self.o.payload.eq(self.i.payload)      # something to export
        return m


def test_limit_formula():
    lim = CycleLimit("d", 1000, 3)
    assert lim.expected == 3000
    assert lim.limit() == MARGIN * 3000 + SLACK
    assert lim.limit(0.5, 0.5) == MARGIN * 3000 * 4 + SLACK
    assert lim.limit(0.2, 0.0) == int(np.ceil(MARGIN * 3000 / 0.8)) + SLACK
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        lim.limit(1.0, 0.0)
    with pytest.raises(ValueError, match="windows >= 1"):
        CycleLimit("d", 1000, 0)


def test_limit_comes_from_the_design():
    stuck = Stuck()
    discard(stuck)
    lim = CycleLimit.of(stuck, 4)
    assert (lim.design, lim.cycles, lim.windows) == ("Stuck", 5, 4)
    fork = Fork(signed(4), 2)
    discard(fork)
    lim = CycleLimit.of(fork, 3, length=40)           # cycles(length): the whole stream
    assert (lim.design, lim.cycles, lim.windows) == ("Fork", 41, 1)
    with pytest.raises(TypeError, match="object has no cycles"):
        CycleLimit.of(object())


def _check_message(e, simulator, design, arrived):
    msg = str(e.value)
    assert msg.startswith(f"{simulator}: {design} stopped at its cycle limit")
    assert arrived in msg
    assert "its cycle formula expects 5 cycles per window x 2 windows = 10" in msg
    assert f"limit {MARGIN * 10 + SLACK} = {MARGIN} x 10 + {SLACK}" in msg


def test_amaranth_limit_says_design_outputs_and_formula():
    from sim.streams import run_stream_block
    with pytest.raises(SimulationTimeout) as e:
        run_stream_block(Stuck(), {"i": [1, 2, 3, 4]}, {"o": 2}, windows=2)
    _check_message(e, "Amaranth simulation", "Stuck", "0 of 2 outputs on o")
    assert f"after {MARGIN * 10 + SLACK} cycles" in str(e.value)


def test_profile_limit_of_a_hanging_accelerator():
    from sim.profile import profile
    model = random_intmodel(FEW, bits=8, seed=1)
    window = random_inputs(model, 1, seed=2).reshape(-1).tolist()
    acc = Accelerator(model)
    lim = CycleLimit.of(acc, 2, name="tiny")
    assert (lim.design, lim.cycles, lim.windows) == ("tiny", acc.cycles(), 2)
    # A limit below the real latency stands in for an accelerator that hangs.
    with pytest.raises(SimulationTimeout, match=r"Amaranth simulation \(profile\): tiny stopped at "
                                                r"its cycle limit after 120 cycles with 0 of 1 "
                                                r"outputs; its cycle formula expects 10 cycles"):
        profile(acc, window, limit=CycleLimit("tiny", 10))


@pytest.mark.verilator
@pytest.mark.skipif(not tools.available("verilator"), reason="verilator missing")
def test_verilator_limit_says_design_outputs_and_formula():
    from sim import compiled
    stuck = Stuck()
    lim = CycleLimit.of(stuck, 2)
    with pytest.raises(SimulationTimeout) as e:
        compiled.run_stream(verilog.convert(stuck, name=TOP), [1, 2, 3, 4], 2, top=TOP, limit=lim)
    _check_message(e, "Verilator", "Stuck", "after 120 cycles with 0 of 2 outputs")


@pytest.mark.ghdl
@pytest.mark.skipif(not tools.available("ghdl"), reason="GHDL missing (apt-get install ghdl)")
def test_ghdl_limit_says_design_outputs_and_formula():
    from flows.vhdl import verilog_to_vhdl
    from sim import ghdl
    stuck = Stuck()
    lim = CycleLimit.of(stuck, 2)
    vhdl = verilog_to_vhdl(verilog.convert(stuck, name=TOP), TOP)
    with pytest.raises(SimulationTimeout) as e:
        ghdl.run_stream(vhdl, [1, 2, 3, 4], 2, limit=lim)
    _check_message(e, "GHDL", "Stuck", "after 120 cycles with 0 of 2 outputs")


@pytest.mark.slow
@pytest.mark.ghdl
@pytest.mark.skipif(not tools.available("ghdl"), reason="GHDL missing (apt-get install ghdl)")
def test_ghdl_runs_an_accelerator_whose_window_holds_few_values():
    """Issue 18: 4 values per window, thousands of cycles of latency. The old testbench gave up
    after 200 + 50 x (inputs + outputs) cycles; the limit now comes from the formula, and the
    VHDL's latency equals it."""
    from flows.vhdl import verilog_to_vhdl
    from sim import ghdl
    model = random_intmodel(FEW, bits=8, seed=1)
    x = random_inputs(model, 1, seed=2)
    acc = Accelerator(model)
    lim = CycleLimit.of(acc, 1)
    n_in = x.size
    assert acc.cycles() > 200 + 50 * (n_in + 1)               # the old limit
    vhdl = verilog_to_vhdl(verilog.convert(acc, name=TOP), TOP)
    res = ghdl.run_stream(vhdl, x.reshape(-1).tolist(), 1, limit=lim,
                          in_signed=model.qtype("input").signed,
                          out_signed=model.qtype("pred").signed)
    assert res.outputs == model.forward(x)["pred"][:, 0].tolist()
    assert res.cycles == acc.cycles()
