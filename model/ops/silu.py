"""SiLU, ``x * sigmoid(x)``, as a table activation."""
from torch.nn import functional as Fn

from . import Activation, register_activation

register_activation(Activation("silu", Fn.silu))
