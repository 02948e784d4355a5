"""ReLU: no table; the first FFN linear clamps its own output (``linear``'s ``relu``)."""
import torch

from . import Activation, register_activation

register_activation(Activation("relu", torch.relu, table=False))
