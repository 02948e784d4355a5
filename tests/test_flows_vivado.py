import pytest

from flows.export import Frame, export_hdl
from sim.verilog import parse_verilog_ports
from flows.vhdl import vhdl_port_name
from flows.vivado import (PART, ip_script_files, ip_script_ports, script_inputs,
                          write_ip_package, write_vivado_project, xdc_ports)
from sim.ghdl import parse_entity_ports
from test_flows_export import ToyMac


def test_vivado_script_files_and_ports(tmp_path):
    res = export_hdl(ToyMac(), tmp_path / "hdl")
    ports = parse_verilog_ports(res.verilog.read_text(), "intformer_top")
    for lang in ("verilog", "vhdl"):
        f = write_vivado_project(tmp_path / "hdl", language=lang)
        text = f.tcl.read_text()
        assert PART in text and "synth_design" in text and "route_design" in text
        assert "report_utilization" in text and "report_timing_summary" in text
        assert "report_power" in text
        inputs = script_inputs(f.tcl)
        assert len(inputs) == 2
        for p in inputs:
            assert p.is_file(), p
        names = ports if lang == "verilog" else {vhdl_port_name(p) for p in ports}
        used = xdc_ports(f.xdc)
        assert "clk" in used
        assert used <= set(names), used - set(names)
        assert "create_clock -name clk -period 10" in f.xdc.read_text()


def test_ip_package_script_files_and_ports(tmp_path):
    res = export_hdl(ToyMac(), tmp_path / "hdl", frame=Frame(4, 1), clock_mhz=125.0)
    top = res.axis_name
    ports = set(parse_verilog_ports(res.axis_verilog.read_text(), top))
    tcl = tmp_path / "hdl" / "vivado" / "package_ip.tcl"
    assert tcl.is_file() and "vivado/package_ip.tcl" in res.files
    for lang, names in (("verilog", ports),
                        ("vhdl", set(parse_entity_ports(res.axis_vhdl.read_text())))):
        path = write_ip_package(tmp_path / "hdl", top, language=lang, clock_mhz=125.0)
        text = path.read_text()
        files = ip_script_files(path)
        assert [p.name for p in files] == [f"{top}.v" if lang == "verilog" else f"{top}.vhd"]
        for p in files:
            assert p.is_file(), p
        named = ip_script_ports(path)
        # every physical port it maps is a port of the top; the interfaces it associates are
        # the two streams, the clock and the reset, named as Vivado names inferred interfaces
        assert named["ports"] <= names, named["ports"] - names
        assert {f"{b}_{s}" for b in ("s_axis", "m_axis")
                for s in ("tdata", "tvalid", "tready", "tlast")} <= named["ports"]
        assert {"clk", "rst"} <= named["ports"]
        assert named["busifs"] == {"s_axis", "m_axis"}
        assert named["clock"] == {"clk"} and named["reset"] == {"rst"}
        assert named["parameter_busifs"] == {"clk", "rst"}
        for cmd in ("ipx::package_project", "ipx::associate_bus_interfaces",
                    "xilinx.com:interface:axis:1.0", "POLARITY ACTIVE_HIGH", "FREQ_HZ 125000000",
                    "ipx::check_integrity", "ipx::save_core", f"set_property top {top}"):
            assert cmd in text, cmd


def test_ip_package_needs_the_export(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_ip_package(tmp_path, "intformer_top_axis")
    with pytest.raises(ValueError, match="verilog or vhdl"):
        write_ip_package(tmp_path, "intformer_top_axis", language="systemc")
