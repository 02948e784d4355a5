from flows.export import export_hdl, parse_verilog_ports
from flows.vhdl import vhdl_port_name
from flows.vivado import PART, script_inputs, write_vivado_project, xdc_ports
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
