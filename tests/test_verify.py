"""Four executors agree on the trained default model: integer model, Amaranth simulation,
compiled Verilog (Verilator) and VHDL (GHDL)."""
import json

import numpy as np
import pytest

from flows.build import verify
from sim import tools


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.ghdl
@pytest.mark.skipif(not tools.available("ghdl"), reason="GHDL missing: `make test` installs it as root "
                                                         "(apt-get install ghdl)")
def test_four_executors_agree_on_real_test_windows(quick_run):
    run, _ = quick_run
    doc = verify(run, amaranth_windows=1, compiled_windows=300, ghdl_windows=1, progress=lambda m: None)
    assert set(doc["executors"]) == {"intmodel", "amaranth", "verilator", "ghdl"}
    assert doc["mismatches"] == 0
    for name, e in doc["executors"].items():
        assert e["mismatches"] == 0, name
    assert doc["executors"]["verilator"]["windows"] == 300
    assert doc["latency"]["cycles"] > 0
    assert doc["latency"]["us"] == doc["latency"]["cycles"] / doc["latency"]["clock_mhz"]
    assert doc["block_cycles"] and all(v > 0 for v in doc["block_cycles"].values())
    saved = json.loads((run / "verify.json").read_text())
    assert saved["mismatches"] == 0 and saved["windows"] == 300


def test_verify_refuses_a_stale_test_vector_file(quick_run, tmp_path):
    import shutil
    run, _ = quick_run
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    with np.load(broken / "test_windows.npz") as z:
        d = {k: z[k] for k in z.files}
    d["outputs"] = d["outputs"] + 1
    np.savez(broken / "test_windows.npz", **d)
    from flows.run import RunError
    with pytest.raises(RunError, match="does not match the integer model"):
        verify(broken, amaranth_windows=1, compiled_windows=1, ghdl_windows=0, progress=lambda m: None)
    assert not (broken / "verify.json").exists()
