"""`intformer search`: the search space, pruning before training, a tiny end-to-end search
with the real estimator and training, and two worker processes sharing one SQLite study.

The training here is tiny (1 float epoch and 1 QAT epoch on 200 windows): these tests check
the machinery, not the accuracy."""
import gc
import json

import numpy as np
import optuna
import pytest

from flows import search as S
from flows.cli import main
from flows.run import TrainOptions

DEFAULT = {"features": 7, "window": 24, "d_model": 16, "heads": 1, "layers": 1, "ffn": 64,
           "norm": "batchnorm", "activation": "relu"}
LARGER = {"features": 7, "window": 24, "d_model": 32, "heads": 2, "layers": 2, "ffn": 96,
          "norm": "layernorm", "activation": "gelu"}
TINY = {"epochs": 1, "float_epochs": 1, "verify": False,
        "train": TrainOptions(max_train_windows=200)}


def tensor_names(shape):
    from model.transformer import ModelConfig, linear_names, quant_point_names
    cfg = ModelConfig(**shape)
    return set(quant_point_names(cfg)) | {n + ".weight" for n in linear_names(cfg)}


def random_candidates(space, n, seed=0):
    """Candidates drawn by Optuna's random sampler through SearchSpace.suggest."""
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


@pytest.mark.parametrize("shape", [DEFAULT, LARGER], ids=["default", "larger"])
@pytest.mark.parametrize("device", S.DEVICES)
def test_space_gives_valid_widths_and_hardware(shape, device):
    from model.synthetic import random_intmodel
    from model.transformer import Forecaster, ModelConfig
    space = S.SearchSpace(shape, device)
    names = tensor_names(shape)
    cands = random_candidates(space, 3) + [space.candidate(space.anchor(b)) for b in (8, 4)]
    for cand in cands:
        assert set(cand.bits) == names                       # every tensor has a width ...
        assert set(cand.bits.values()) <= set(S.BIT_CHOICES)
        Forecaster(ModelConfig(**shape), cand.quant_config())  # ... that QAT accepts
        model = random_intmodel(shape, bits=cand.bits)
        assert {t.qtype.bits for t in model.tensors.values()} <= set(S.BIT_CHOICES)
        assert S.latency_cycles(model, cand.hw) > 0          # the accelerator takes the knobs
        if device == "ice40up5k":
            assert "dsp_packed" not in json.dumps(cand.hw["blocks"])
    for name, choices in space.choices.items():              # folds divide the widths
        if name.endswith(("pe", "simd", "lanes")):
            assert all(c <= S.MAX_FOLD for c in choices)
    gc.collect()      # an unused Amaranth block would warn now (warnings are errors here)


def test_anchors_are_the_presets():
    from hw.presets import preset
    from model.synthetic import random_intmodel
    space = S.SearchSpace(DEFAULT, "xc7s15")
    for bits, cycles in ((8, 5238), (4, 2736)):
        params = space.anchor(bits)
        assert all(params[k] in space.choices[k] for k in params)
        model = random_intmodel(DEFAULT, bits=bits)
        assert S.latency_cycles(model, space.candidate(params).hw) == cycles
        assert S.latency_cycles(model, preset("xc7s15", bits)) == cycles


def test_bad_shapes_are_refused():
    with pytest.raises(S.SearchError, match="divisible by heads"):
        S.SearchSpace({**DEFAULT, "d_model": 15, "heads": 2}, "xc7s15")
    with pytest.raises(S.SearchError, match="no parallelism knob"):
        S.SearchSpace({**DEFAULT, "features": 1, "d_model": 1, "ffn": 1}, "xc7s15")
    with pytest.raises(S.SearchError, match="unknown device"):
        S.SearchSpace(DEFAULT, "xc7a35t")


class _DoesNotFit:
    """Stands in for flows.estimate.Estimate (this test is about the pruning logic only)."""
    used, capacity, fits = {"LUT": 9000}, {"LUT": 8000}, False

    def over(self):
        return ["LUT: 9000 estimated > 8000 available"]

    def to_dict(self):
        return {"used": self.used, "capacity": self.capacity, "fits": False}


def test_candidates_that_do_not_fit_are_pruned_without_training(monkeypatch, tmp_path):
    # A fake estimator, only here: the pruning decision must not depend on what the real
    # estimator says about a particular design. Every other test uses the real one.
    monkeypatch.setattr(S, "estimate", lambda model, hw, device: _DoesNotFit())

    def no_training():
        raise AssertionError("a candidate that does not fit was trained")

    space = S.SearchSpace(DEFAULT, "xc7s15")
    opts = S.SearchOptions(device="xc7s15", out=tmp_path, **TINY)
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.enqueue_trial(space.anchor(8))
    study.optimize(S.Objective(space, opts, no_training, progress=lambda m: None), n_trials=3)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    for t in study.trials:
        assert "LUT: 9000 estimated > 8000" in t.user_attrs["pruned_reason"]
        assert t.user_attrs["resources"]["used"] == {"LUT": 9000}
        assert t.user_attrs["utilisation"] == {"LUT": 1.125}
        assert set(t.user_attrs["bits"]) == tensor_names(DEFAULT) and t.user_attrs["hw"]
    assert not (tmp_path / "trials").exists()


def test_choice_rule_and_front():
    docs = [{"number": n, "state": "COMPLETE", "val_rmse": r, "cycles": c}
            for n, r, c in [(0, 1.5, 5000), (1, 3.0, 2700), (2, 1.4, 9000), (3, 3.5, 6000),
                            (4, 2.0, 2700)]] + [{"number": 5, "state": "PRUNED"}]
    front = S.pareto_front(docs)
    assert [d["number"] for d in front] == [4, 0, 2]          # by cycles; 1 and 3 dominated
    assert S.choose(front)["number"] == 2                      # most accurate
    assert S.choose(front, max_cycles=6000)["number"] == 0     # most accurate within budget
    assert S.choose(front, max_cycles=100) is None


def test_neighbour_sampler_steps_from_the_front():
    """New designs are front designs with one to three parameters moved (numbers by one step
    to a neighbouring choice), always among the choices, never one tried before."""
    space = S.SearchSpace(DEFAULT, "xc7s15")
    preset8 = space.anchor(8)
    study = optuna.create_study(directions=["minimize"] * 2, sampler=S._sampler(space, 0))
    study.enqueue_trial(preset8)

    def objective(trial):     # a stand-in where the preset dominates: it stays the only parent
        params = space.suggest(trial).params
        return (0.0, 0) if params == preset8 else (1.0, 1)

    study.optimize(objective, n_trials=12)
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(keys)) == len(keys)
    for t in study.trials[1:]:
        moved = {k: v for k, v in t.params.items() if v != preset8[k]}
        assert 1 <= len(moved) <= 3
        for k, v in moved.items():
            choices = space.choices[k]
            assert v in choices
            if isinstance(v, int):
                assert abs(choices.index(v) - choices.index(preset8[k])) == 1


@pytest.mark.parametrize("argv, message", [
    (["--trials", "0"], "--trials must be an integer >= 1"),
    (["--workers", "3", "--trials", "2"], "more than --trials"),
    (["--d-model", "15", "--heads", "2"], "divisible by heads"),
    (["--storage", "sqlite:///{tmp}/no/such/dir/s.db"], "cannot open the Optuna storage"),
    (["--storage", "postgresql://search:secret@db.invalid/x"], "cannot open the Optuna storage"),
    (["--storage", "postgresql+pg8000://search:secret@localhost/x"],
     "driver (Python module 'pg8000') is not installed: pip install pg8000"),
])
def test_bad_input_gives_a_clear_error(argv, message, tmp_path, capsys):
    argv = ["search", "--device", "xc7s15", "--out", str(tmp_path / "s"), "--quiet",
            *[a.format(tmp=tmp_path) for a in argv]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "secret" not in err
    assert not (tmp_path / "s" / "float").exists()             # refused before any training


def test_unknown_device_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--device", "xc7a35t", "--out", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'xc7a35t'" in capsys.readouterr().err
    with pytest.raises(S.SearchError, match="unknown device"):
        S.search(S.SearchOptions(device="xc7a35t", out=tmp_path))


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path, capsys):
    """Three trials (the 8- and 4-bit presets, one sampled) with the real estimator and
    training; the chosen design is a run directory the other stages accept."""
    from flows.build import hw_config
    from hw.presets import preset
    from model.intmodel import IntModel
    from model.train import load_run
    out = tmp_path / "s"
    code = main(["search", "--device", "xc7s15", "--out", str(out), "--trials", "3",
                 "--epochs", "1", "--float-epochs", "1", "--max-train-windows", "200",
                 "--no-verify", "--quiet"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    doc = json.loads((out / "search.json").read_text())
    assert len(doc["trials"]) == 3 and doc["storage"] == f"sqlite:///{out.resolve()}/search.db"
    anchors = {d["anchor"] for d in doc["trials"] if d["anchor"]}
    assert anchors == {"xc7s15 preset, uniform 8 bits", "xc7s15 preset, uniform 4 bits"}
    done = [d for d in doc["trials"] if d["state"] == "COMPLETE"]
    assert done and doc["pareto"] and doc["chosen"]["trial"] in doc["pareto"]
    for d in done:
        assert d["val_rmse"] > 0 and d["cycles"] > 0 and d["resources"]["fits"]
        assert d["us"] == pytest.approx(d["cycles"] / 100.0)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pareto.csv").read_text().count("\n") == 1 + len(doc["pareto"])
    assert "intformer build" in stdout and "val RMSE" in stdout

    chosen = next(d for d in doc["trials"] if d["number"] == doc["chosen"]["trial"])
    run = out / "chosen"
    model = IntModel.load(run)
    assert hw_config(run, "xc7s15") == chosen["hw"]            # the searched configuration
    assert hw_config(run, "ice40up5k") == preset("ice40up5k", S.dominant_bits(chosen["bits"]))
    assert S.latency_cycles(model, chosen["hw"]) == chosen["cycles"]
    assert {model.qtype(n).bits for n in model.tensors} <= set(S.BIT_CHOICES)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["int"]["val"]["rmse"] == pytest.approx(chosen["val_rmse"])
    load_run(run, "qat")
    tw = np.load(run / "test_windows.npz")
    assert np.array_equal(model.forward(tw["inputs"][:20])["pred"][:, 0], tw["outputs"][:20])


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    """Two worker processes, each running two trials of the real objective (estimate, QAT,
    integer model, cycles) on one SQLite study."""
    out = tmp_path / "s"
    out.mkdir()
    # Besides the two preset anchors the search enqueues, two more small designs (the 8-bit
    # preset at 6 and at mixed widths): every trial is then quick to estimate and to train.
    space = S.SearchSpace(DEFAULT, "xc7s15")
    study = optuna.create_study(study_name="intformer-xc7s15", directions=["minimize"] * 2,
                                storage=S.open_storage(S.default_storage(out)))
    six = space.anchor(6)
    study.enqueue_trial(six)
    study.enqueue_trial({**six, **{k: 4 for k in six if k.endswith(".weight")}})

    doc = S.search(S.SearchOptions(device="xc7s15", out=out, trials=4, workers=2, **TINY),
                   progress=lambda m: None)
    trials = optuna.load_study(study_name="intformer-xc7s15",
                               storage=S.open_storage(S.default_storage(out))).get_trials()
    assert len(trials) == 4 and len({t.number for t in trials}) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["worker"] for t in trials) == [0, 0, 1, 1]   # two processes
    assert {d["number"] for d in doc["trials"]} == {t.number for t in trials}
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # none run twice
    assert (out / "chosen" / "intmodel.json").is_file()
