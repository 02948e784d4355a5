import pytest

from flows import ice40, tools
from test_flows_export import ToyMac

pytestmark = pytest.mark.skipif(not (tools.available("yosys") and tools.available("nextpnr-ice40")),
                                reason="yowasp tools missing")


def test_up5k_bitstream(tmp_path):
    rep = ice40.synth_up5k(ToyMac(), tmp_path, freq_mhz=24)
    print("\n[up5k]", rep.summary(), {k: round(v, 2) for k, v in rep.times.items()})
    assert rep.bitstream.is_file() and rep.bitstream.stat().st_size > 50_000
    assert rep.fmax > 0
    assert 20 < rep.used("ICESTORM_LC") < 1000
    assert rep.used("ICESTORM_DSP") >= 1


def test_too_many_io_rejected(tmp_path):
    from amaranth import signed
    toy = ToyMac(in_shape=signed(20), out_shape=signed(20))
    with pytest.raises(ValueError, match="I/O"):
        ice40.synth_up5k(toy, tmp_path)
