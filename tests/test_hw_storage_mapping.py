"""Each storage choice maps to the XC7S15 resource it names (Yosys synth_xilinx cell counts)."""
import pytest
from amaranth import signed

from flows.xilinx import synth_xc7s15
from hw.common import Buffer, Rom, Storage

BRAM = ("RAMB18E1", "RAMB36E1")
LUTRAM = ("RAM32M", "RAM64M", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1S", "RAM32X1S",
          "RAM64X1S", "RAM128X1S")


pytestmark = pytest.mark.yosys


def count(cells, names):
    return sum(cells.get(n, 0) for n in names)


@pytest.mark.parametrize("storage", list(Storage))
def test_activation_buffer_maps_as_asked(storage):
    rep = synth_xc7s15(Buffer(signed(8), 128, storage), timing=False)
    if storage is Storage.BRAM:
        assert count(rep.cells, BRAM) >= 1 and count(rep.cells, LUTRAM) == 0
    elif storage is Storage.LUTRAM:
        assert count(rep.cells, LUTRAM) >= 1 and count(rep.cells, BRAM) == 0
    else:
        assert count(rep.cells, BRAM) == 0 and count(rep.cells, LUTRAM) == 0
        assert rep.ff >= 128 * 8          # every cell a flip-flop


@pytest.mark.parametrize("storage", list(Storage))
def test_weight_rom_maps_as_asked(storage):
    init = [(i * 37 + 11) % 256 - 128 for i in range(512)]
    rep = synth_xc7s15(Rom(init, signed(8), storage), timing=False)
    if storage is Storage.BRAM:
        assert count(rep.cells, BRAM) >= 1
    else:                                   # distributed ROM = LUTs as logic, no RAM cells
        assert count(rep.cells, BRAM) == 0 and count(rep.cells, LUTRAM) == 0
        assert rep.lut_logic > 0
