"""Parallel branches: a stream read by several computing bodies whose outputs meet at an add
(neither operand descending from the other). The generator puts a FIFO of one window on
every operand of such a join and, where a fork has several computing readers, one in front
of each; the graphs below (two attentions, a linear chain against an attention, three ways,
operands from two forks) are bit-exact against the integer model under random gaps and
stalls, on random and extreme windows back to back, with cycles() the first window's
simulated latency."""
import dataclasses

import numpy as np
import pytest

from flows.estimate import mark_used
from hw.accelerator import Accelerator
from model.intmodel import IntModel, Op
from model.synthetic import random_inputs, random_intmodel
from sim.streams import run_stream_block

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=2, ffn=8, norm="batchnorm",
             activation="relu")
ATTENTION = ("q", "k", "v", "scores", "attn", "context", "attn_out")


def assembled(model, plan):
    """A model of ``plan``'s operators, in order: ``(output, (operator of model, inputs))``,
    an operator copied under a new name reading other tensors (its parameters, arrays and
    output type kept; a third item gives it another shape); ``"pred"`` must come last. Unused tensors are dropped."""
    ops, tensors = [], {n: model.tensors[n] for n in ("input",) + tuple(model.constants)}
    for out, (src, inputs, *shape) in plan:
        op, t = model.op(src), model.tensors[src]
        shape = tuple(shape[0]) if shape else op.spec.shape
        ops.append(Op(dataclasses.replace(op.spec, output=out, inputs=tuple(inputs), shape=shape),
                      op.params, op.arrays))
        tensors[out] = dataclasses.replace(t, name=out, shape=shape)
    return IntModel(model.config, tensors, ops, model.constants, model.input_norm,
                    model.target_norm)


def attention(layer, x, name):
    """The operators of layer ``layer``'s attention reading ``x``, as ``name.q`` ... ``name``."""
    p, n = f"l{layer}.", f"{name}."
    ins = {"q": (x,), "k": (x,), "v": (x,), "scores": (n + "q", n + "k"), "attn": (n + "scores",),
           "context": (n + "attn", n + "v"), "attn_out": (n + "context",)}
    return [(name if o == "attn_out" else n + o, (p + o, ins[o])) for o in ATTENTION]


def head(x):
    return [("pooled", ("pooled", (x,))), ("pred", ("pred", ("pooled",)))]


def front():
    return [("proj", ("proj", ("input",))), ("embed", ("embed", ("proj", "pe")))]


def two_attentions(model):
    return assembled(model, front() + attention(0, "embed", "a") + attention(1, "embed", "b")
                     + [("sum", ("l0.res1", ("a", "b")))] + head("sum"))


def linears_against_attention(model):
    """A streaming body of two linears against a window-buffering one (the attention)."""
    return assembled(model, front() + [("c1", ("l1.q", ("embed",))), ("c2", ("l1.k", ("c1",)))]
                     + attention(0, "embed", "a") + [("sum", ("l0.res1", ("c2", "a")))]
                     + head("sum"))


def three_ways(model):
    """Two attentions and a linear summed, the sum then a residual over the embedding."""
    return assembled(model, front() + attention(0, "embed", "a") + attention(1, "embed", "b")
                     + [("c", ("l1.v", ("embed",))), ("ab", ("l0.res1", ("a", "b"))),
                        ("abc", ("l1.res1", ("ab", "c"))), ("res", ("l0.res2", ("embed", "abc")))]
                     + head("res"))


def two_forks(model):
    """A join whose operands come from different forks: an attention on the embedding (forked
    to a second attention) and a linear on the projection (forked to the embedding's add),
    the second attention then added to their sum."""
    return assembled(model, front() + attention(0, "embed", "a") + [("c", ("l1.q", ("proj",))),
                                                                   ("sum", ("l0.res1", ("a", "c")))]
                     + attention(1, "embed", "b") + [("all", ("l1.res1", ("sum", "b")))]
                     + head("all"))


def built(model, hw=None):
    acc = Accelerator(model, hw)
    mark_used(acc)
    return acc


def extreme_windows(model):
    q, (L, F) = model.qtype("input"), (model.config["window"], model.config["features"])
    alt = np.where(np.indices((L, F)).sum(0) % 2, q.qmin, q.qmax)
    return np.stack([np.full((L, F), q.qmin), np.full((L, F), q.qmax), alt,
                     q.qmin + q.qmax - alt, np.full((L, F), q.zero_point)])


def check(model, hw=None, seed=1):
    windows = np.concatenate([random_inputs(model, 3, seed=seed), extreme_windows(model)])
    n = len(windows)
    got, _ = run_stream_block(Accelerator(model, hw), {"i": windows.reshape(-1).tolist()},
                              {"o": n}, windows=n, stall_in=0.3, stall_out=0.5, seed=seed + 1)
    assert got["o"] == model.forward(windows)["pred"][:, 0].tolist()
    acc = Accelerator(model, hw)
    _, cycles = run_stream_block(acc, {"i": windows[0].reshape(-1).tolist()}, {"o": 1})
    assert cycles == acc.cycles()
    return cycles


def fifos(acc):
    return {n.name: (n.tensor, n.block.depth) for n in acc.nodes if n.role == "fifo"}


def test_two_attentions_summed():
    model = two_attentions(random_intmodel(SMALL, bits=6, seed=3))
    acc = built(model)
    # one FIFO in front of each attention (the embedding's fork never stops within a window),
    # one on each operand of the join (no body is ever stopped within a window)
    assert fifos(acc) == {"a_attention_in_fifo": ("embed", 16), "b_attention_in_fifo": ("embed", 16),
                          "sum_fifo0": ("a", 16), "sum_fifo1": ("b", 16)}
    assert acc.node("embed_fork").block.n == 2
    check(model)


def test_a_linear_chain_against_an_attention():
    model = linears_against_attention(random_intmodel(SMALL, bits=8, seed=4))
    hw = {"blocks": {"c1": {"pe": 1, "simd": 1}, "c2": {"pe": 2, "simd": 4}}}
    assert set(fifos(built(model, hw))) == {"c1_in_fifo", "a_attention_in_fifo", "sum_fifo0", "sum_fifo1"}
    check(model, hw)


def test_three_ways_inside_a_residual():
    model = three_ways(random_intmodel(dict(SMALL, heads=2), bits=6, seed=5))
    hw = {"kinds": {"attention": {"qkv_fused": True}}, "blocks": {"c": {"pe": 1, "simd": 2}}}
    acc = built(model, hw)
    assert fifos(acc) == {"a_attention_in_fifo": ("embed", 16), "b_attention_in_fifo": ("embed", 16),
                          "c_in_fifo": ("embed", 16), "res_fifo": ("embed", 16),
                          "ab_fifo0": ("a", 16), "ab_fifo1": ("b", 16),
                          "abc_fifo0": ("ab", 16), "abc_fifo1": ("c", 16)}
    assert acc.node("res_fork").block.n == 4
    check(model, hw)


def test_operands_from_two_forks():
    model = two_forks(random_intmodel(SMALL, bits=6, seed=6))
    acc = built(model)
    assert [n.name for n in acc.nodes if n.role == "fork"] == ["proj_fork", "embed_fork"]
    assert fifos(acc) == {"embed_in_fifo": ("proj", 16), "c_in_fifo": ("proj", 16),
                          "a_attention_in_fifo": ("embed", 16),
                          "b_attention_in_fifo": ("embed", 16),
                          "sum_fifo0": ("a", 16), "sum_fifo1": ("c", 16),
                          "all_fifo0": ("sum", 16), "all_fifo1": ("b", 16)}
    check(model)


@pytest.mark.parametrize("seed", [7, 8])
def test_a_longer_window_and_slow_bodies(seed):
    model = linears_against_attention(random_intmodel(dict(SMALL, window=8, features=2),
                                                      bits=6, seed=seed))
    hw = {"kinds": {"linear": {"pe": 1, "simd": 1}}}
    check(model, hw, seed=seed)


def test_a_softmax_over_rows_of_another_shape():
    """A softmax on its own, over the last axis of an (L, d) tensor (not an attention's
    (heads, L, L)): its block has L rows of d, and the accelerator is bit-exact."""
    from hw.softmax import Softmax
    base = random_intmodel(dict(SMALL, window=3, d_model=5, layers=1), bits=6, seed=9)
    model = assembled(base, front() + [("sm", ("l0.attn", ("embed",), (3, 5)))] + head("sm"))
    block = Softmax.from_op(model, "sm")
    mark_used(block)
    assert (block.rows, block.row_length) == (3, 5)
    check(model)
