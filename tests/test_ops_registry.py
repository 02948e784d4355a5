"""The operator registry (model/ops/): every kind and activation the graph uses is registered,
each entry's conversion and synthetic generator fill in exactly its schema, its hardware block
builds from its operators, and every registered table activation is checked the same way (a
new activation module is covered by these tests as it is added)."""
import numpy as np
import pytest
import torch
from amaranth.hdl import Fragment

from model import ops
from model.convert import to_intmodel
from model.intmodel import IntModel, ModelFileError, Op, check_config, graph_spec
from model.qat import dequantize
from model.synthetic import random_inputs, random_intmodel
from model.transformer import ModelConfig
from sim.streams import check_accelerator
from test_convert import calibrated

SMALL = dict(features=3, window=4, d_model=4, heads=2, layers=1, ffn=8, norm="batchnorm")
TABLES = [a for a in ops.activations() if ops.activation(a).table]
SHAPES = [dict(SMALL, norm=n, activation=a) for n in ("batchnorm", "layernorm")
          for a in ops.activations()]


def converted(shape, bits=6, seed=0):
    cfg = ModelConfig(**shape, forecast="level")
    model, _ = calibrated(cfg, bits, seed, windows=128)
    F = cfg.features
    return model, to_intmodel(model, {"mean": np.zeros(F), "std": np.ones(F)},
                              {"mean": 0.0, "std": 1.0})


def test_relu_is_the_default_and_first_then_the_tables():
    assert ops.activations()[0] == "relu" == ModelConfig().activation
    assert not ops.activation("relu").table and set(TABLES) >= {"gelu", "silu"}


def test_unregistered_names_are_refused_with_the_registered_ones():
    with pytest.raises(ValueError, match="silu"):
        check_config(dict(SMALL, activation="swish"))
    with pytest.raises(ValueError, match="silu"):
        ModelConfig(activation="swish")
    with pytest.raises(ValueError, match="registered"):
        ops.kind("conv1d")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s['norm']}-{s['activation']}")
def test_conversion_and_synthesis_fill_each_kinds_schema(shape):
    _, im = converted(shape)
    for model in (im, random_intmodel(shape, bits=5, seed=1)):
        assert {o.kind for o in model.ops} <= set(ops.kinds())
        for op in model.ops:
            k = ops.kind(op.kind)
            assert set(op.params) == set(k.params) and set(op.arrays) == set(k.arrays), op.output


def test_a_file_without_a_kinds_array_is_refused(tmp_path):
    model = random_intmodel(dict(SMALL, activation="gelu"), bits=4)
    ops_ = [Op(o.spec, o.params, {}) if o.kind == "lut" else o for o in model.ops]
    with pytest.raises(ModelFileError, match="table"):
        IntModel(model.config, model.tensors, ops_, model.constants, model.input_norm,
                 model.target_norm)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s['norm']}-{s['activation']}")
def test_every_hardware_block_builds_from_its_operators(shape):
    model = random_intmodel(shape, bits=4, seed=2)
    for op in model.ops:
        k = ops.kind(op.kind)
        if k.hw_block is None:                      # inside the context's AttentionCore
            assert op.kind == "scores"
            continue
        block = k.block_class().from_op(model, op.output)
        Fragment.get(block, None)                   # elaborates (and so uses) it


@pytest.mark.parametrize("name", TABLES)
def test_every_table_is_its_function_within_half_an_output_step(name):
    model, im = converted(dict(SMALL, activation=name), bits=5)
    fn = ops.activation(name).function
    for i in range(im.config["layers"]):
        xt, ot = im.tensors[f"l{i}.ffn_pre"], im.tensors[f"l{i}.ffn_hidden"]
        codes = torch.arange(xt.qtype.qmin, xt.qtype.qmax + 1)
        lo = (ot.qtype.qmin - ot.qtype.zero_point) * ot.scale
        hi = (ot.qtype.qmax - ot.qtype.zero_point) * ot.scale
        want = fn(dequantize(codes, model.fq_point(f"l{i}.ffn_pre").qparams())).double().clamp(lo, hi)
        table = torch.as_tensor(im.op(f"l{i}.ffn_hidden").arrays["table"])
        got = (table - ot.qtype.zero_point).double() * ot.scale
        assert (got - want).abs().max().item() <= ot.scale / 2 * (1 + 1e-5)


@pytest.mark.parametrize("name", ops.activations())
def test_every_activation_builds_a_bit_exact_accelerator(name):
    model = random_intmodel(dict(SMALL, activation=name), bits=4, seed=3)
    check_accelerator(model, random_inputs(model, 2, seed=4), stall_in=0.2, stall_out=0.4, seed=5)


def test_the_graph_places_a_table_after_its_own_linear():
    for name in ops.activations():
        specs = {s.output: s for s in graph_spec(dict(SMALL, activation=name))}
        first = "l0." + ops.activation(name).first_linear
        assert specs[first].kind == "linear" and specs["l0.ffn_out"].inputs == ("l0.ffn_hidden",)
        if ops.activation(name).table:
            assert specs["l0.ffn_hidden"].kind == "lut"
            assert specs["l0.ffn_hidden"].dims["function"] == name
