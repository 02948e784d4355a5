"""Cycle limits of the stream simulations, derived from the simulated design's own cycle formula.

Every stream driver (Amaranth's simulator in :mod:`sim.streams` and :mod:`sim.profile`, the
compiled Verilog in :mod:`sim.compiled`, the VHDL under GHDL in :mod:`sim.ghdl`) stops a
simulation that runs past its limit, so that a design that hangs fails instead of running
forever. The limit is not a guess about designs in general: it comes from the design's
``cycles()``, the exact latency of one window with an always-valid source and an always-ready
sink, and from how the simulation drives it::

    limit = MARGIN * windows * cycles / ((1 - in_stall) * (1 - out_stall)) + SLACK

* windows go back to back, and a later window never holds up an earlier one, so ``windows``
  windows take at most ``windows * cycles`` edges (pipelining makes it fewer);
* a source that withholds ``valid`` with probability ``p`` offers an element every
  ``1 / (1 - p)`` cycles on average, a sink likewise, so random stalls stretch the schedule
  by at most ``1 / ((1 - in_stall) * (1 - out_stall))`` on average;
* ``MARGIN`` covers the luck of the draw, ``SLACK`` the reset and the first handshakes of a
  short stream.

A simulation that reaches its limit raises :class:`SimulationTimeout`, whose message names the
simulator and the design, says how many outputs arrived and what the formula expected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CycleLimit", "SimulationTimeout", "MARGIN", "SLACK"]

MARGIN = 2
SLACK = 100


class SimulationTimeout(TimeoutError):
    """A stream simulation reached its cycle limit before all outputs arrived."""


@dataclass(frozen=True)
class CycleLimit:
    """How long a stream simulation of ``design`` may run.

    ``cycles``: the design's cycle formula for one window (``design.cycles()``); ``windows``:
    the windows streamed back to back. Build it with :meth:`of` from the design itself."""
    design: str
    cycles: int
    windows: int = 1

    def __post_init__(self):
        if int(self.cycles) < 1 or int(self.windows) < 1:
            raise ValueError(f"{self.design}: a cycle limit needs cycles >= 1 and windows >= 1, "
                             f"got cycles={self.cycles}, windows={self.windows}")

    @classmethod
    def of(cls, design, windows: int = 1, *, length: int | None = None,
           name: str | None = None) -> "CycleLimit":
        """The limit of ``windows`` windows of ``design``, from its ``cycles()``.

        Streaming blocks (``streaming``: element-wise blocks, FIFOs, forks; their
        ``cycles(length)`` takes any length, :class:`hw.block.Block`) are given ``length``, the
        elements of the whole stream (then ``windows`` is 1). ``name`` names the design in
        messages (default: its class name)."""
        formula = getattr(design, "cycles", None)
        label = name or type(design).__name__
        if not callable(formula):
            raise TypeError(f"{label} has no cycles() formula: give the simulation a CycleLimit "
                            f"built from the expected cycles of one window")
        if length is not None and getattr(design, "streaming", False):
            return cls(label, int(formula(int(length))), 1)
        return cls(label, int(formula()), int(windows))

    @property
    def expected(self) -> int:
        """Cycles the formula gives for the whole stream (no stalls, no pipelining)."""
        return self.cycles * self.windows

    def limit(self, in_stall: float = 0.0, out_stall: float = 0.0) -> int:
        """The cycle limit of a simulation with these stall probabilities."""
        for p in (in_stall, out_stall):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"stall probabilities must be in [0, 1), got {p}")
        return math.ceil(MARGIN * self.expected / ((1.0 - in_stall) * (1.0 - out_stall))) + SLACK

    def formula(self, in_stall: float = 0.0, out_stall: float = 0.0) -> str:
        """How the limit was computed, in words and numbers."""
        per = (f"{self.cycles:,} cycles per window x {self.windows:,} windows = {self.expected:,}"
               if self.windows > 1 else f"{self.cycles:,} cycles")
        stalls = (f" / ((1 - {in_stall:g}) x (1 - {out_stall:g}))" if in_stall or out_stall else "")
        return (f"its cycle formula expects {per}; limit {self.limit(in_stall, out_stall):,} = "
                f"{MARGIN} x {self.expected:,}{stalls} + {SLACK}")

    def timeout(self, simulator: str, ran: int, outputs: int, expected_outputs: int,
                in_stall: float = 0.0, out_stall: float = 0.0, what: str = "outputs"
                ) -> SimulationTimeout:
        """The error of a simulation that stopped at its limit after ``ran`` cycles."""
        return SimulationTimeout(
            f"{simulator}: {self.design} stopped at its cycle limit after {ran:,} cycles with "
            f"{outputs:,} of {expected_outputs:,} {what}; {self.formula(in_stall, out_stall)}")
