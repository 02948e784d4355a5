"""GELU (exact, erf) as a table activation."""
import math

import numpy as np
from torch.nn import functional as Fn

from . import Activation, register_activation


def _tanh_gelu(x: np.ndarray) -> np.ndarray:
    # Synthetic models tabulate the tanh form: the calibration records name synthetic models
    # by seed and must rebuild the very tables they were synthesised with.
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


register_activation(Activation("gelu", Fn.gelu, synthetic=_tanh_gelu))
