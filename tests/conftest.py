"""Shared fixtures: one quickly trained run on the real default dataset, reused by the
whole-model tests (training the full model takes minutes; this one trains on a slice)."""
import pytest
from hypothesis import settings

# Tests have no time limits: Hypothesis' default 200 ms deadline failed
# examples on a loaded machine whose first call of an operator is slow.
settings.register_profile("intformer", deadline=None)
settings.load_profile("intformer")


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A run directory trained briefly on the first windows of the default weather data."""
    from flows.run import TrainOptions, train_stage
    out = tmp_path_factory.mktemp("quick_run")
    opts = TrainOptions(bits=8, epochs=3, qat_epochs=1, max_train_windows=1500, seed=0)
    metrics = train_stage(out, opts)
    return out, metrics
