"""The simulated accelerator with the integer model's interface (hls4ml style):
``SimulatedAccelerator(model, hw).predict(windows)`` gives the same numbers as
``model.predict(windows)``, computed by the generated hardware."""
from __future__ import annotations

import numpy as np

from hw.accelerator import Accelerator

TOP = "intformer_top"


class SimulatedAccelerator:
    """Runs windows through the accelerator generated for ``model`` with ``hw``.

    ``simulator``: "verilator" (the exported Verilog, compiled; fast) or "amaranth"
    (Amaranth's own simulator; slow, no external tool)."""

    def __init__(self, model, hw=None, simulator: str = "verilator"):
        if simulator not in ("verilator", "amaranth"):
            raise ValueError(f"simulator must be 'verilator' or 'amaranth', got {simulator!r}")
        self.model, self.hw, self.simulator = model, hw, simulator
        self.last_cycles = None

    def predict_codes(self, xq) -> np.ndarray:
        """Integer input windows (N, L, F) -> integer prediction codes (N,), or (N, horizon)
        (the model's ``pred_codes``)."""
        xq = self.model.qtype("input").check(xq, "input windows").numpy()
        flat = xq.reshape(-1).tolist()
        n, h = len(xq), self.model.horizon
        shape = (n,) if h == 1 else (n, h)
        if n == 0:
            return np.zeros(shape, dtype=np.int64)
        acc = Accelerator(self.model, self.hw)
        if self.simulator == "amaranth":
            from .streams import run_stream_block
            got, self.last_cycles = run_stream_block(acc, {"i": flat}, {"o": n * h}, windows=n)
            return np.array(got["o"], dtype=np.int64).reshape(shape)
        from amaranth.back import verilog
        from . import compiled
        from .limits import CycleLimit
        limit = CycleLimit.of(acc, n, name=f"{TOP} (the accelerator)")
        text = verilog.convert(acc, name=TOP)
        res = compiled.run_stream(text, flat, n * h, top=TOP, limit=limit,
                                  in_signed=self.model.qtype("input").signed,
                                  out_signed=self.model.qtype("pred").signed)
        self.last_cycles = res.cycles
        return np.array(res.outputs, dtype=np.int64).reshape(shape)

    def predict(self, windows) -> np.ndarray:
        """Raw windows (N, L, F) in the data's units -> predictions in the target's units."""
        return self.model.dequantize_output(self.predict_codes(self.model.quantize_input(windows)), windows)
