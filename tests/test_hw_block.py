"""One block contract in hw/ (issue 19 item 4): every block of a generated accelerator is a
:class:`hw.block.Block` of element streams, built from its operators, whose ``cycles()`` is
the last edge of its ``output_times`` and whose ``reference`` is the registry's integer
function, bit-exact in simulation."""
import numpy as np
import pytest
import torch
from amaranth.lib import stream

from flows.estimate import mark_used
from hw.accelerator import Accelerator
from hw.block import Block
from hw.elementwise import Affine
from model.synthetic import random_inputs, random_intmodel
from sim.streams import run_stream_block

SMALL = dict(features=3, window=4, d_model=4, heads=2, layers=1, ffn=8, norm="layernorm",
             activation="gelu")


@pytest.fixture(scope="module")
def model():
    return random_intmodel(SMALL, bits=6)


def _blocks(model):
    acc = Accelerator(model)
    mark_used(acc)
    for node in acc.nodes:
        if node.role == "op":
            ins = ["input" if src is None else src.tensor for _, (src, _) in node.sources]
            yield node, ins


def test_every_node_keeps_the_contract(model):
    acc = Accelerator(model)
    mark_used(acc)
    for node in acc.nodes:
        b = node.block
        assert isinstance(b, Block), node.name
        assert all(isinstance(mb.signature, stream.Signature)
                   for mb in b.signature.members.values()), node.name
        assert b.input_ports == [p for p, _ in node.sources]
        if node.role != "op":
            assert b.streaming
            continue
        assert b.ops and b.ops[-1].output == node.tensor and set(node.ops) <= {o.output for o in b.ops}
        ideal = list(range(1, b.stream_length(None) + 1))
        assert b.cycles() == b.output_times(*[ideal] * len(b.input_ports))[-1], node.name
        if not b.streaming:
            with pytest.raises(ValueError, match="computes windows"):
                b.cycles(b.window + 1)


def test_reference_is_the_registry_function(model):
    v = model.forward(random_inputs(model, 2, seed=3))
    for node, ins in _blocks(model):
        got = node.block.reference(*[v[t] for t in ins])
        assert torch.equal(torch.as_tensor(got).reshape(-1), v[node.tensor].reshape(-1)), node.name


def test_each_block_simulates_its_reference_with_exact_cycles(model):
    v = model.forward(random_inputs(model, 1, seed=4))
    for node, ins in _blocks(model):
        b = node.block
        want = np.asarray(v[node.tensor]).ravel().tolist()
        got, cycles = run_stream_block(b, {p: np.asarray(v[t]).ravel().tolist()
                                           for p, t in zip(b.input_ports, ins)},
                                       {"o": len(want)})
        assert got["o"] == want, node.name
        assert cycles == b.cycles(), node.name


def test_a_block_built_from_parameters_has_no_operator_reference():
    from model.intops import QType
    b = Affine(QType(8, True, 0), [1, 2], [0, 0], 0, QType(8, True, 0), channels=2)
    mark_used(b)
    assert b.cycles(10) == 10 + Affine.LATENCY + 2
    with pytest.raises(TypeError, match="needs it"):
        b.cycles()
    with pytest.raises(NotImplementedError, match="not built from an operator"):
        b.reference([1, 2])


def test_from_op_names_the_kind_it_builds(model):
    with pytest.raises(ValueError, match="is a lut operator, not affine"):
        Affine.from_op(model, next(o.output for o in model.ops if o.kind == "lut"))
