"""hw.softmax.Softmax against intops.softmax: synthetic models, extremes, stalls, cycle formula."""
import numpy as np
import pytest

from model import intops
from model.intops import QType
from model.synthetic import random_inputs, random_intmodel
from hw.softmax import Reciprocal, Softmax
from sim.streams import check_against_reference


def config(L=6, d=4, heads=1):
    return dict(features=3, window=L, d_model=d, heads=heads, layers=1, ffn=8,
                norm="layernorm", activation="relu")




@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("heads", [1, 2])
def test_synthetic_models_two_windows_with_stalls(bits, heads):
    model = random_intmodel(config(heads=heads), bits=bits, seed=bits + heads)
    v = model.forward(random_inputs(model, 2, seed=bits))
    dut = Softmax.from_op(model, "l0.attn", div_bits=1 + bits % 3, mul=["dsp", "lut"][heads - 1])
    check_against_reference(dut, v["l0.scores"], stall=0.3, seed=bits, windows=2)


@pytest.mark.parametrize("div_bits,table_storage,buffer_storage",
                         [(1, "registers", "lutram"), (2, "bram", "bram"), (3, "lutram", "registers")])
def test_default_dims_cycles(div_bits, table_storage, buffer_storage):
    model = random_intmodel(config(L=24, d=16), bits=8, seed=7)
    v = model.forward(random_inputs(model, 1, seed=1))
    dut = Softmax.from_op(model, "l0.attn", div_bits=div_bits, table_storage=table_storage,
                          buffer_storage=buffer_storage)
    cycles = check_against_reference(dut, v["l0.scores"], exact_cycles=True)
    N, D = 24, dut.div_cycles
    assert cycles == (dut.rows + 2) * N + D + 7      # the divider never sets the pace here


@pytest.mark.parametrize("row_length,rows,div_bits,banks", [(1, 5, 1, 4), (2, 6, 1, 4), (3, 4, 2, 2),
                                                          (5, 4, 4, 3), (9, 3, 1, 4)])
def test_short_rows_cycle_recurrence(row_length, rows, div_bits, banks):
    """Rows shorter than the division: the divider sets the pace, the recurrence stays exact."""
    st = QType(6, True)
    table = intops.softmax_exp_table(0.3, st, 12)
    dut = Softmax(st, table, 12, 26, QType(6, False), rows=rows, row_length=row_length,
                  div_bits=div_bits, banks=banks)
    rng = np.random.default_rng(row_length)
    scores = rng.integers(st.qmin, st.qmax + 1, rows * row_length)
    check_against_reference(dut, scores, exact_cycles=True)
    check_against_reference(dut, np.concatenate([scores, scores[::-1]]), stall=0.3, seed=1,
                            windows=2)


def extreme_rows(st: QType, n: int):
    rows = [np.full(n, st.qmin), np.full(n, st.qmax), np.full(n, st.zero_point)]
    dominant = np.full(n, st.qmin)
    dominant[n // 2] = st.qmax
    rows.append(dominant)
    alt = np.where(np.arange(n) % 2, st.qmax, st.qmin)
    rows.append(alt)
    rows.append(np.full(n, st.qmax - 1 if st.qmax > st.qmin else st.qmax))
    return np.concatenate(rows)


@pytest.mark.parametrize("bits,signed,zp,scale", [(2, True, 0, 0.5), (2, False, 3, 2.0),
                                                  (8, True, 0, 0.01), (8, False, 255, 0.05),
                                                  (8, False, 0, 3.0), (4, False, 15, 0.001)])
def test_extremes(bits, signed, zp, scale):
    st = QType(bits, signed, zp)
    out = QType(bits, False)
    exp_bits, recip_bits = intops.softmax_precision(bits)
    table = intops.softmax_exp_table(scale, st, exp_bits)
    n = 7
    dut = Softmax(st, table, exp_bits, recip_bits, out, rows=6, row_length=n, div_bits=2)
    check_against_reference(dut, extreme_rows(st, n), stall=0.3, seed=bits)


def test_full_precision_table_saturates():
    """All-equal scores of a one-element row: e*r = 2**recip_bits saturates to qmax."""
    st = QType(8, True)
    table = intops.softmax_exp_table(0.001, st, 14)      # never reaches zero: full 256 entries
    dut = Softmax(st, table, 14, 30, QType(8, False), rows=4, row_length=1)
    cycles = check_against_reference(dut, [5, -128, 127, 0], exact_cycles=True)
    assert cycles == dut.cycles()


def test_reciprocal_exhaustive_small():
    from amaranth.sim import Simulator
    dut = Reciprocal(9, 3, 40, bits_per_cycle=2)
    results = {}

    async def bench(ctx):
        for d in range(3, 41):
            ctx.set(dut.start, 1)
            ctx.set(dut.divisor, d)
            await ctx.tick()
            ctx.set(dut.start, 0)
            while not ctx.get(dut.last):
                await ctx.tick()
            results[d] = ctx.get(dut.result)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert results == {d: 512 // d for d in range(3, 41)}


def test_bad_parameters():
    st = QType(4, True)
    table = intops.softmax_exp_table(0.5, st, 10)
    with pytest.raises(ValueError):
        Softmax(st, table, 10, 12, QType(4, False), rows=1, row_length=4)      # recip too small
    with pytest.raises(ValueError):
        Softmax(st, table, 10, 22, QType(4, True), rows=1, row_length=4)       # signed output
    with pytest.raises(ValueError):
        Softmax(st, table, 9, 22, QType(4, False), rows=1, row_length=4)       # table[0] mismatch
