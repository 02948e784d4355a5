"""The operator registry: each operator kind, and each activation function, defined in one place.

An operator kind is one :class:`OpKind` subclass, registered with :func:`register`, in one
module of this package. Its entry holds everything the rest of the project asks about that
kind: the integer forward pass, the converter, the synthetic models and the accelerator's block
lookup call it instead of branching on kind names (where the network places its operators is
written in ``intmodel.graph_spec`` only; the accelerator walks the model's graph):

* ``params`` / ``arrays``: the integer parameters and arrays an operator of the kind carries
  (the model file's schema, checked when a model is built or loaded);
* :meth:`OpKind.run`: its integer function, made only of :mod:`model.intops` operations (the
  one arithmetic definition; the width bounds the hardware derives its registers from are the
  ``intops`` bounds those operations are checked against);
* :meth:`OpKind.convert`: its parameters from a calibrated QAT model (:mod:`model.convert`);
* :meth:`OpKind.synthesize`: random but well-scaled parameters for tests
  (:mod:`model.synthetic`);
* ``hw_block``: its hardware block (``"module:Class"``, imported only when hardware is built,
  since ``model`` does not import ``hw``), built with the block's ``from_op``; the estimator
  needs nothing more (it elaborates that block and counts its parts by class); ``hw_region``
  where one block computes the operator with its neighbours (attention);

A table activation (GELU, SiLU, ...) is one :class:`Activation` registered with
:func:`register_activation`: the float function QAT trains with and the ``lut`` operator
tabulates. The model configuration, the QAT model, the CLI and the search list
:func:`activations`.

Adding an operator or an activation is adding a module here: every module of this package is
imported below, and registers its entries as it is imported.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

_KINDS: dict = {}
_ACTIVATIONS: dict = {}


class OpKind:
    """One operator kind; subclasses fill in the class attributes and methods they need."""

    kind: str = ""
    params: tuple = ()
    arrays: tuple = ()
    #: Parameters a model file may leave out (files written before they existed).
    optional_params: tuple = ()
    #: ``"module:Class"`` of the hardware block (with a ``from_op(model, output, **knobs)``
    #: constructor), or None where another kind's block computes it too (``scores``, inside
    #: the block of ``context``).
    hw_block: str | None = None
    #: ``"module:Class"`` of a block that computes this operator together with neighbours
    #: (attention: the Q/K/V and output linears around ``context``), or None. The accelerator
    #: asks the class's ``region(model, output)`` which operators it covers and builds it
    #: with ``from_region(model, region, knobs)`` in their place.
    hw_region: str | None = None

    def run(self, op, ins: list, types: list, out):
        """The integer output of ``op`` from its input tensors ``ins`` of types ``types``."""
        raise NotImplementedError

    def convert(self, ctx, spec) -> tuple[dict, dict]:
        """``(params, arrays)`` of the operator ``spec`` of a calibrated QAT model
        (``ctx``: :class:`model.convert.ConvertContext`)."""
        raise NotImplementedError

    def derived_type(self, tensors: dict, spec):
        """``(QType, scale)`` of the output when the operator derives it from its inputs'
        (``tensors``: the :class:`model.intmodel.TensorInfo` declared so far) instead of having
        a quantiser of its own (``argmax``); None (the default): the output is quantised."""
        return None

    def output_signed(self, spec) -> bool:
        """Whether a synthetic model may give the output an unsigned type only (False)."""
        return True

    def synthesize(self, ctx, spec) -> tuple[dict, dict]:
        """``(params, arrays)`` of a random operator ``spec``
        (``ctx``: :class:`model.synthetic.SynthContext`): declares the output's type, draws
        parameters that keep it well used, records its spread."""
        out = ctx.declare(spec.output, spec.shape, signed=self.output_signed(spec))
        params, arrays = self.synthetic_params(ctx, spec, out)
        ctx.std[spec.output] = ctx.target_std(out)
        return params, arrays

    def synthetic_params(self, ctx, spec, out) -> tuple[dict, dict]:
        raise NotImplementedError

    def block_class(self):
        """The hardware block class (imported now: ``model`` never imports ``hw`` itself)."""
        if self.hw_block is None:
            raise ValueError(f"{self.kind!r} operators are built inside another kind's block")
        return _import(self.hw_block)

    def region_class(self):
        """The class of :attr:`hw_region` (imported now), or None."""
        return None if self.hw_region is None else _import(self.hw_region)


def _import(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def register(cls):
    """Class decorator: registers one instance of an :class:`OpKind` subclass under its kind."""
    if not cls.kind or cls.kind in _KINDS:
        raise ValueError(f"operator kind {cls.kind!r} is empty or registered twice")
    _KINDS[cls.kind] = cls()
    return cls


def kind(name: str) -> OpKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown operator kind {name!r}; registered: {sorted(_KINDS)}") from None


def kinds() -> tuple:
    return tuple(_KINDS)


@dataclass(frozen=True)
class Activation:
    """The FFN's activation. ``function``: its float function on a PyTorch tensor (QAT trains
    with it; for a table activation, conversion tabulates it over the input codes).
    ``table``: it is a ``lut`` operator after its own linear ``ffn_pre`` (False: fused into
    the linear as a clamp, ReLU only). ``synthetic``: the float64 NumPy function synthetic
    models tabulate (default: ``function``)."""

    name: str
    function: Callable
    table: bool = True
    synthetic: Callable | None = None

    @property
    def first_linear(self) -> str:
        """The first FFN linear's output, within a layer (``"ffn_pre"`` before a table)."""
        return "ffn_pre" if self.table else "ffn_hidden"


def register_activation(act: Activation) -> Activation:
    if act.name in _ACTIVATIONS:
        raise ValueError(f"activation {act.name!r} registered twice")
    _ACTIVATIONS[act.name] = act
    return act


def activation(name: str) -> Activation:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {activations()}, got {name!r}") from None


def activations() -> tuple:
    """Names of the registered activations, ReLU first (the default), then by module name."""
    return tuple(_ACTIVATIONS)


# Sorted, and "relu" first, so that the list of choices does not depend on the file system.
for _name in ["relu"] + sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "relu"):
    importlib.import_module(f"{__name__}.{_name}")
