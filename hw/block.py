"""The contract of the accelerator's stream blocks: :class:`Block`.

The generator (:mod:`hw.accelerator`), the simulators (:mod:`sim`) and the tests treat every
block alike, so every block answers the same questions with the same signatures:

* **Construction from an operator**: ``from_op(model, output, **knobs)`` builds the block of
  operator ``output`` of an :class:`model.intmodel.IntModel` (the registry's ``hw_block``
  names the class, :attr:`Block.op_kinds` the operator kinds it computes; the knobs are the
  constructor's keyword parameters). The block keeps the operators it computes
  (:attr:`Block.ops`), which give it its reference. A block is also built directly from
  integer parameters (the tests do); it then has no operators.
* **Stream signature**: every port is an element stream (``amaranth.lib.stream``:
  ``payload``, ``valid``, ``ready``), the inputs (``In``) in the order of the operator's
  streamed operands, then the output ``o`` (``Out``); like ports are one port array.
* **Timing**: ``output_times(*arrive)`` takes the edges at which the elements of each input
  stream are offered (one list per input port) and gives the edges at which the outputs leave
  with an always-ready sink; ``cycles(length=None)`` is the last of them with always-valid
  sources offering ``length`` elements each (default: one window, :attr:`Block.window`): the
  clock edges up to and including the one that transfers the last output, as
  :func:`sim.streams.run_stream_block` counts them. ``part_times(*arrive)`` gives the rows of
  :meth:`hw.accelerator.Accelerator.stage_times` (one, unless the block is made of parts).
* **Reference**: ``reference(*inputs)``, one integer tensor per input port (any number of
  windows, flattened or not), gives the output the integer model computes, in the output
  stream's order when flattened: by default the registry's integer function of each of
  :attr:`Block.ops` (:mod:`model.intops`, the one definition of the arithmetic); a block
  built from parameters may define its own.
"""
from __future__ import annotations

import math

from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In

from model import intops
from model import ops as registry

from .common import Recorded

__all__ = ["Block"]


class Block(Recorded, wiring.Component):
    """Base of the stream blocks (module docstring: the contract)."""

    #: Operator kinds :meth:`from_op` builds this block for.
    op_kinds: tuple = ()
    #: True for blocks that work element by element on a stream of any length (element-wise
    #: operators, FIFOs, forks): ``cycles(length)`` takes any length, and ``cycles()`` is
    #: their :attr:`window` if they have one.
    streaming: bool = False
    #: Names of the parts :meth:`part_times` reports (a block made of blocks), else empty.
    parts: tuple = ()
    #: The operators the block computes, in graph order, and their model (set by
    #: :meth:`from_op`).
    ops: tuple = ()
    model = None

    def __init__(self, members: dict):
        for name, member in members.items():
            if not (member.is_signature and isinstance(member.signature, stream.Signature)):
                raise TypeError(f"{type(self).__name__}: port {name!r} is not an element stream")
        super().__init__(members)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_op(cls, model, output: str, **knobs) -> "Block":
        """The block of operator ``output`` of ``model`` (knobs: constructor keywords)."""
        op = model.op(output)
        if op.kind not in cls.op_kinds:
            raise ValueError(f"{output!r} is a {op.kind} operator, not "
                             f"{' or '.join(cls.op_kinds) or 'one ' + cls.__name__ + ' builds'}")
        return cls.build(model, op, **knobs).computing(model, [op])

    @classmethod
    def build(cls, model, op, **knobs) -> "Block":
        """The constructor call of :meth:`from_op` for ``op`` (of a kind in :attr:`op_kinds`)."""
        raise NotImplementedError(f"{cls.__name__} is not built from an operator")

    def computing(self, model, ops) -> "Block":
        """Record that this block computes operators ``ops`` of ``model`` (its reference)."""
        # Set after construction, so elaborate() must never read them: the estimator's cache
        # knows a block by its constructor's arguments only (Recorded).
        self.model, self.ops = model, tuple(ops)
        return self

    # -- ports --------------------------------------------------------------------------------
    @property
    def input_ports(self) -> list:
        """Names of the input streams, in signature order."""
        return [n for n, mb in self.signature.members.items() if mb.flow == In]

    # -- timing -------------------------------------------------------------------------------
    @property
    def window(self) -> int | None:
        """Elements per window on each input stream: by default those of its operator's
        streamed input (None: a streaming block built from parameters has none)."""
        if not self.ops:
            return None
        return math.prod(self.model.tensors[self._streamed()[0]].shape)

    def _streamed(self) -> list:
        """The tensors the block's input streams carry, in port order."""
        made = {op.output for op in self.ops}
        streamed = []
        for op in self.ops:
            for n in op.spec.inputs:
                if n not in made and n not in self.model.constants and n not in streamed:
                    streamed.append(n)
        return streamed

    def stream_length(self, length: int | None) -> int:
        """The ``length`` argument of :meth:`cycles`, checked: a windowed block computes whole
        windows (one), a streaming block any length."""
        n = self.window if length is None else int(length)
        if n is None:
            raise TypeError(f"{type(self).__name__} streams any length: cycles(length) needs it")
        if not self.streaming and n != self.window:
            raise ValueError(f"{type(self).__name__} computes windows of {self.window} elements, "
                             f"not {n}")
        return n

    def output_times(self, *arrive) -> list:
        """Per-element output edges given, per input port, the edges from which its elements
        are offered (each stays offered until taken), with an always-ready sink."""
        raise NotImplementedError

    def input_times(self, *arrive) -> list:
        """The edges at which the block can take its inputs: a block with several input
        streams takes one element of each at once, when the last of them is there."""
        if len(arrive) == 1:
            return list(arrive[0])
        return [max(t) for t in zip(*arrive)]

    def part_times(self, *arrive) -> list:
        """``(part, input edges, output edges)`` rows (module docstring); one row, part ``""``,
        unless the block is made of :attr:`parts`."""
        return [("", self.input_times(*arrive), self.output_times(*arrive))]

    def part_ports(self) -> list:
        """``(part, input stream, output stream)`` of each row of :meth:`part_times` (the
        first input stream of a block with several)."""
        return [("", getattr(self, self.input_ports[0]), self.o)]

    def cycles(self, length: int | None = None) -> int:
        """Edges up to and including the last output's transfer, for always-valid sources
        offering ``length`` elements each (default: one window) and an always-ready sink."""
        ideal = list(range(1, self.stream_length(length) + 1))
        return self.output_times(*([ideal] * len(self.input_ports)))[-1]

    # -- reference ----------------------------------------------------------------------------
    def reference(self, *inputs):
        """The integer model's output for ``inputs`` (one integer tensor per input port):
        the registry's function of every operator in :attr:`ops`, in order."""
        if not self.ops:
            raise NotImplementedError(f"{type(self).__name__} was not built from an operator "
                                      f"(from_op) and has no reference of its own")
        m = self.model
        streamed = self._streamed()
        if len(inputs) != len(streamed):
            raise TypeError(f"{type(self).__name__}.reference takes {len(streamed)} input "
                            f"tensors ({', '.join(streamed)}), got {len(inputs)}")
        v = {n: intops.as_int(x).reshape(-1, *m.tensors[n].shape) for n, x in zip(streamed, inputs)}
        for op in self.ops:
            ins = [v[n] if n in v else intops.as_int(m.constants[n]) for n in op.spec.inputs]
            v[op.output] = registry.kind(op.kind).run(op, ins, [m.qtype(n) for n in op.spec.inputs],
                                                      m.qtype(op.output))
        return v[self.ops[-1].output]
