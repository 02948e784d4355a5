"""The export for Vivado users (issue 22): the AXI4-Stream top beside the plain one, PORTS.md
with framing, reset, latency and initiation interval, the self-checking testbenches run here
under Icarus Verilog (-g2005 and -g2012) and GHDL (VHDL-2008), the xsim script."""
import json
import re

import pytest

from flows import testbench
from flows.export import AXIS_PORTS, Frame, export_hdl
from sim import tools
from sim.verilog import parse_verilog_ports
from flows.vhdl import vhdl_port_name
from hw.accelerator import Accelerator
from hw.amaranth_adapter import discard
from model.synthetic import random_inputs, random_intmodel
from sim.ghdl import parse_entity_ports
from test_flows_export import ToyMac, _vectors

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu")

needs_iverilog = pytest.mark.skipif(not tools.available("iverilog"),
                                    reason="Icarus Verilog missing (apt-get install iverilog, "
                                           "or make system-deps as root)")
needs_ghdl = pytest.mark.skipif(not tools.available("ghdl"),
                                reason="GHDL missing (apt-get install ghdl)")


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """The export of a small synthetic accelerator with 4 windows of vectors."""
    model = random_intmodel(SMALL, bits=8, seed=1)
    windows = random_inputs(model, 4, seed=2)
    acc = Accelerator(model)
    cycles = acc.cycles()
    res = export_hdl(acc, tmp_path_factory.mktemp("axis") / "hdl",
                     test_vectors=(windows.reshape(-1), model.forward(windows)["pred"][:, 0]),
                     frame=Frame(windows[0].size, 1, order="time-step-major",
                                 result="one prediction code"), clock_mhz=100.0)
    return res, cycles


def test_export_files_and_ports(small_export):
    res, _ = small_export
    d = res.out_dir
    expected = ["PORTS.md", "intformer_top.v", "intformer_top.vhd", "intformer_top_axis.v",
                "intformer_top_axis.vhd", "vectors_in.txt", "vectors_out.txt", "vectors.json",
                "tb/tb_intformer_top_axis.v", "tb/tb_intformer_top_axis.vhd", "tb/run_xsim.sh",
                "vivado/package_ip.tcl", "MANIFEST.json"]
    assert sorted(res.files) == sorted(expected)
    for f in expected:
        assert (d / f).is_file(), f
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) == sorted(expected)
    aports = parse_verilog_ports((d / "intformer_top_axis.v").read_text(), "intformer_top_axis")
    assert {n: (p.direction, p.width) for n, p in aports.items()} == {
        "clk": ("input", 1), "rst": ("input", 1),
        "s_axis_tdata": ("input", 8), "s_axis_tvalid": ("input", 1),
        "s_axis_tready": ("output", 1), "s_axis_tlast": ("input", 1),
        "m_axis_tdata": ("output", 8), "m_axis_tvalid": ("output", 1),
        "m_axis_tready": ("input", 1), "m_axis_tlast": ("output", 1),
        "event_tlast_unexpected": ("output", 1), "event_tlast_missing": ("output", 1),
        "event_tdata_range": ("output", 1), "input_error": ("output", 1)}
    assert set(aports) == set(AXIS_PORTS)
    # the VHDL entity has the same names (single underscores) and carries the Vivado
    # interface attributes, as the Verilog does
    vh = (d / "intformer_top_axis.vhd").read_text()
    assert set(parse_entity_ports(vh)) == {vhdl_port_name(p) for p in aports} == set(aports)
    assert 'attribute X_INTERFACE_PARAMETER of rst : signal is "POLARITY ACTIVE_HIGH"' in vh
    v = (d / "intformer_top_axis.v").read_text()
    assert 'X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axis:m_axis, ASSOCIATED_RESET rst' in v
    manifest = json.loads((d / "MANIFEST.json").read_text())
    assert manifest["files"] == res.files and manifest["axis_top"] == "intformer_top_axis"
    assert manifest["frame"] == {"n_in": 12, "n_out": 1}


def test_verilog_has_no_always_star(small_export):
    # The bug of issue 22: Amaranth's own backend keeps combinational processes as always @*
    # blocks started by a Verilog-2005-only time-0 event; under SystemVerilog they stay X.
    res, _ = small_export
    for f in (res.verilog, res.axis_verilog):
        text = f.read_text()
        assert not re.search(r"always\s*@\s*(\*|\(\s*\*\s*\))", text)
        assert "always_comb" not in text                # and no SystemVerilog either
        assert "always @(posedge clk)" in text


def test_ports_md_says_framing_reset_timing_dialects(small_export):
    res, cycles = small_export
    md = res.ports_md.read_text()
    t = res.timing
    # the figures: latency = cycles() = simulation; interval from the simulation
    assert t.latency == cycles
    assert f"| {cycles:,} |" in md
    assert f"`cycles()`: {cycles:,}" in md
    assert f"one result every | {t.interval:,} |" in md
    assert f"| {t.latency_back_to_back:,} |" in md
    assert "**12 input values**" in md and "**1 output value**" in md
    assert "time-step-major" in md and "one prediction code" in md
    assert "## Reset" in md and "synchronous and active-high" in md
    assert "Clock target: **100 MHz**" in md
    assert "Verilog-2005" in md and "VHDL-93" in md and "VHDL-2008" in md
    assert "event_tlast_unexpected" in md and "input_error" in md
    for f in res.files:
        assert f"`{f}`" in md, f


def test_xsim_script_names_existing_files_and_tops(small_export):
    res, _ = small_export
    script = res.out_dir / "tb" / "run_xsim.sh"
    inputs = testbench.xsim_script_inputs(script)
    names = {p.name for p in inputs}
    assert {"intformer_top_axis.v", "intformer_top_axis.vhd", "tb_intformer_top_axis.v",
            "tb_intformer_top_axis.vhd", "vectors_in.txt", "vectors_out.txt"} <= names
    for p in inputs:
        assert p.is_file(), p
    text = script.read_text()
    for tool in ("xvlog", "xvhdl -2008", "xelab", "xsim"):
        assert tool in text
    # the tops it elaborates are the testbenches' module and entity
    assert "module tb_intformer_top_axis;" in (res.out_dir / "tb/tb_intformer_top_axis.v").read_text()
    assert "entity tb_intformer_top_axis_vhd is" in (res.out_dir / "tb/tb_intformer_top_axis.vhd").read_text()
    assert "tb_v.tb_intformer_top_axis " in text and "tb_vhd.tb_intformer_top_axis_vhd " in text


@pytest.mark.iverilog
@needs_iverilog
@pytest.mark.parametrize("std", ["2005", "2012"])
def test_verilog_testbench_passes_under_icarus(small_export, std):
    res, cycles = small_export
    r = testbench.run_icarus(res.out_dir, res.axis_name, std=std)
    print(r.log)
    assert r.passed, r.log
    assert r.latency == cycles
    assert r.interval == res.timing.interval                 # the simulation at export, again
    assert r.cycles_per_window is not None


@pytest.mark.ghdl
@needs_ghdl
def test_vhdl_testbench_passes_under_ghdl(small_export):
    res, cycles = small_export
    r = testbench.run_ghdl(res.out_dir, res.axis_name)
    print(r.log)
    assert r.passed, r.log
    assert r.latency == cycles and r.interval == res.timing.interval
    if tools.available("iverilog"):
        # same LFSR in both testbenches: the same gaps, the same cycle count
        assert r.cycles_per_window == testbench.run_icarus(res.out_dir, res.axis_name).cycles_per_window


@pytest.mark.iverilog
@pytest.mark.ghdl
@needs_iverilog
@needs_ghdl
def test_testbenches_fail_on_a_wrong_result(tmp_path):
    # A testbench that cannot fail checks nothing: one wrong expected value -> FAIL in both
    # (window 2 is checked back to back and again under stalls: 2 errors).
    toy = ToyMac()
    xs, expected = _vectors(4, toy=toy)
    res = export_hdl(toy, tmp_path / "hdl", test_vectors=(xs, expected), frame=Frame(toy.n, 1))
    assert res.timing.latency == toy.cycles()
    good = testbench.run_icarus(res.out_dir, res.axis_name, std="2012")
    assert good.passed, good.log
    lines = (res.out_dir / "vectors_out.txt").read_text().split()
    lines[2] = str(int(lines[2]) + 1)
    (res.out_dir / "vectors_out.txt").write_text("\n".join(lines) + "\n")
    for r in (testbench.run_icarus(res.out_dir, res.axis_name, std="2012"),
              testbench.run_ghdl(res.out_dir, res.axis_name)):
        assert not r.passed
        assert "FAIL: 2 errors" in r.log and "output 2: got" in r.log


@pytest.mark.iverilog
@needs_iverilog
def test_testbench_checks_the_latency(tmp_path):
    toy = ToyMac()
    xs, expected = _vectors(3, toy=toy)
    res = export_hdl(toy, tmp_path / "hdl", test_vectors=(xs, expected), frame=Frame(toy.n, 1),
                     vhdl=False, timing=True)
    assert not (res.out_dir / "tb").exists()          # the testbenches come with the VHDL
    res = export_hdl(toy, tmp_path / "hdl", test_vectors=(xs, expected), frame=Frame(toy.n, 1))
    r = testbench.run_icarus(res.out_dir, res.axis_name, defines={"LATENCY": toy.cycles() + 1})
    assert not r.passed and "latency differs" in r.log


def test_vectors_must_be_whole_windows(tmp_path):
    toy = ToyMac()
    discard(toy)                          # only its signature is looked at
    xs, expected = _vectors(3, toy=toy)
    with pytest.raises(ValueError, match="not whole windows"):
        export_hdl(toy, tmp_path / "hdl", test_vectors=(xs[:-1], expected), frame=Frame(toy.n, 1))
    with pytest.raises(ValueError, match="at least one input"):
        Frame(0, 1)
    assert list(tmp_path.iterdir()) == []
