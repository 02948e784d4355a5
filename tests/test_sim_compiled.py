import pytest

from flows.export import export_hdl
from sim import compiled, tools
from sim.limits import CycleLimit
from test_flows_export import ToyMac, _vectors

pytestmark = [pytest.mark.verilator,
              pytest.mark.skipif(not tools.available("verilator"), reason="verilator missing")]


def test_compiled_stream_cached_and_stalls(tmp_path, monkeypatch):
    monkeypatch.setenv("INTFORMER_CACHE", str(tmp_path / "cache"))
    toy = ToyMac()
    xs, expected = _vectors(200)
    v = export_hdl(toy, tmp_path / "hdl", vhdl=False).verilog.read_text()
    limit = CycleLimit.of(toy, len(expected))
    r1 = compiled.run_stream(v, xs, len(expected), in_stall=0.5, out_stall=0.5, seed=11,
                             limit=limit)
    assert r1.outputs == expected
    r2 = compiled.run_stream(v, xs, len(expected), limit=limit)
    assert r2.outputs == expected and r2.build_s == 0.0       # cache hit
    assert r2.cycles < r1.cycles                              # stalls cost cycles
    assert r2.cycles >= len(xs)
    print(f"\n[verilator] build {r1.build_s:.1f} s, {r2.cycles_per_s:,.0f} cycles/s")
