"""A run directory and the stages that fill it.

Layout of ``RUN/`` (each stage reads what the previous ones wrote):

* ``config.json``, ``float.pt``, ``qat.pt``, ``qparams.json``, ``history.json`` (training),
* ``intmodel.json`` + ``intmodel.npz`` (the integer model, loadable with NumPy alone),
* ``metrics.json`` (test RMSE of float, QAT, integer models and persistence, in target units;
  integer-vs-QAT agreement in output LSBs; ``--task classify``: accuracy, macro-F1 and the
  confusion matrix of each, with the majority-class and nearest-centroid baselines; ``--task
  anomaly``: precision, recall, F1 and threshold of each and of the largest-difference
  baseline; ``anomaly.npz`` the test windows' scores and flags, for the report),
* ``test_windows.npz`` (the quantised test windows, expected integer outputs, truth),
* later stages: ``hw/`` (exported HDL, synthesis results), ``report.json``, ``report.html``.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class RunError(ValueError):
    """A run directory is missing something or holds something malformed."""


def write_json_atomic(path: Path, doc) -> None:
    """Write JSON under a temporary name and rename it: a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing: run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON ({e}): delete it and rerun its stage") from None


@dataclass
class TrainOptions:
    """What `intformer train` takes (the model and quantisation knobs a user sets)."""
    features: int | None = None     # taken from the data
    window: int = 24
    horizon: int = 1                # steps forecast per window (t+1 .. t+horizon)
    d_model: int = 16
    heads: int = 1
    layers: int = 1
    ffn: int | None = None
    norm: str = "batchnorm"
    activation: str = "relu"
    bits: int = 8
    bits_map: dict | None = None    # tensor name / pattern -> bits (mixed precision)
    scheme: str = "adaptive"
    seed: int = 0
    epochs: int | None = None
    qat_epochs: int | None = None
    max_train_windows: int | None = None   # train on the first N windows only (quick runs)
    csv: str | None = None          # user data instead of the default weather data
    time_column: str | None = None
    feature_columns: list | None = None
    target_column: str | None = None
    forecast: str = "auto"          # "change" when the target is an input feature, else "level"
    ranges: str = "learned"         # quantisation ranges: "learned" (LSQ) or "observed" (min/max)
    qat_lr: float | None = None     # QAT learning rate (None: TrainConfig's)
    distill: float = 0.0            # weight of the float model's output in the QAT loss
    qat_bn: str = "frozen"          # batch-norm statistics during QAT: "frozen" or "train" (re-estimated)
    task: str = "forecast"          # "forecast", "classify" or "anomaly" (labelled series:
                                    # --dataset or --csv)
    dataset: str | None = None      # a registered dataset by name (flows.datasets)


def resolve_forecast(forecast: str, data) -> str:
    """``"auto"``: forecast the change from the last value when the target is an input feature."""
    if getattr(data, "task", "forecast") != "forecast":
        return "level"
    if forecast == "auto":
        return "change" if data.target_feature is not None else "level"
    return forecast


TASKS = ("forecast", "classify", "anomaly")

#: How the anomaly task builds its training / validation windows (model.anomalydata): decoys
#: (anomalies injected into a window's older rows, labelled 0) and thresholds chosen for 1 %
#: anomalous windows.
ANOMALY_DATA = {"decoys": True, "prevalence": 0.01}


def load_data(opts: TrainOptions):
    from model import data as D
    if opts.task not in TASKS:
        raise D.DataError(f"--task must be one of {TASKS}, got {opts.task!r}")
    if opts.task != "forecast":
        return _load_task_data(opts)
    if opts.dataset:
        from .datasets import task_of
        if task_of(opts.dataset) != "forecast":
            raise D.DataError(f"dataset {opts.dataset!r} is for --task {task_of(opts.dataset)}")
    if opts.csv:
        if not (opts.time_column and opts.feature_columns and opts.target_column):
            raise D.DataError("with --csv give --time-column, --features and --target")
        return D.load_csv(opts.csv, time_column=opts.time_column,
                          feature_columns=opts.feature_columns,
                          target_column=opts.target_column, window=opts.window,
                          horizon=opts.horizon)
    return D.load_weather(window=opts.window, horizon=opts.horizon)


def _load_task_data(opts: TrainOptions):
    """Labelled series for ``opts.task`` (classify): a registered dataset or a CSV of one
    example per row (the class in ``--target``)."""
    from model.data import DataError
    if opts.horizon != 1:
        raise DataError(f"--horizon is for forecasting; --task {opts.task} takes none")
    if opts.dataset:
        from .datasets import load_task_dataset
        return load_task_dataset(opts.dataset, opts.task, seed=0, window=opts.window)
    if opts.csv and opts.task == "anomaly":
        from model.anomalydata import load_anomaly_csv
        cols = opts.feature_columns or []
        if len(cols) != 1:
            raise DataError("--task anomaly scores one series: give its column with --features "
                            "VALUE and the 0/1 anomaly labels with --target LABEL")
        return load_anomaly_csv(opts.csv, cols[0], opts.target_column, opts.window,
                                **ANOMALY_DATA)
    if opts.csv:
        from model.classdata import load_classes_csv
        return load_classes_csv(opts.csv, opts.target_column, opts.feature_columns)
    if opts.task == "anomaly":
        raise DataError("--task anomaly needs a labelled series and the default weather data "
                        "has no anomaly labels: give --dataset ucr-internal-bleeding-16, or --csv "
                        "FILE --features VALUE --target LABEL (0/1 per row)")
    raise DataError(f"--task {opts.task} needs labelled series and the default weather data "
                    f"has no labels: give --dataset italy-power-demand, or --csv FILE with one "
                    f"example per row and --target CLASS_COLUMN")


#: Bit-width of the input and of the output (logits / score) of a classifier or detector below
#: 8 bits (the forecaster's "4io8" recipe as their default; ``--bits-map input=4,logits=4``
#: overrides it): the 4-bit input was most of a 4-bit classifier's loss (README, Tasks).
TASK_IO_BITS = 8


def task_bits(task: str, head: str, bits: int) -> dict:
    """The default per-tensor widths of ``task`` at ``bits``: below :data:`TASK_IO_BITS`, the
    input and the ``head`` tensor of a classifier or detector at that width (none for a
    forecaster: its 4-bit input and output stay a choice, ``--bits-map``)."""
    if task == "forecast" or bits >= TASK_IO_BITS:
        return {}
    return {"input": TASK_IO_BITS, head: TASK_IO_BITS}


#: The detector's training (model.train.TrainConfig): targets smoothed to 0.05 / 0.95, which
#: bounds its score near +-3 (without, the logit grows to a range the 4-bit tensors before it
#: cannot carry).
ANOMALY_TRAIN = {"label_smoothing": 0.1}
#: ... and its QAT below 8 bits (--qat-lr / --qat-epochs override it): the default short QAT
#: does not recover a 4-bit body from its float model (README, Tasks, has the figures).
ANOMALY_LOW_BITS = {"qat_lr": 1e-3, "qat_epochs": 40, "qat_patience": 10}


def train_config(opts: TrainOptions, data):
    """The :class:`model.train.TrainConfig` of ``opts`` on ``data``."""
    from model import train as T
    from model.qat import QuantConfig
    from model.transformer import ModelConfig
    classify = getattr(data, "task", "forecast") == "classify"
    mcfg = ModelConfig(features=data.n_features, window=data.window if classify else opts.window,
                       d_model=opts.d_model,
                       heads=opts.heads, layers=opts.layers, ffn=opts.ffn, norm=opts.norm,
                       activation=opts.activation, forecast=resolve_forecast(opts.forecast, data),
                       horizon=opts.horizon,
                       **({"task": "classify", "classes": len(data.class_names)} if classify else
                          {"task": "anomaly"} if data.task == "anomaly" else {}))
    qcfg = QuantConfig(default_bits=opts.bits, bits={**task_bits(data.task, mcfg.head, opts.bits),
                                                     **(opts.bits_map or {})},
                       default_scheme=opts.scheme, learn_ranges=opts.ranges == "learned")
    tcfg = T.TrainConfig(model=mcfg, quant=qcfg, seed=opts.seed,
                         max_train_windows=opts.max_train_windows)
    if data.task == "anomaly":
        for k, v in {**ANOMALY_TRAIN, **(ANOMALY_LOW_BITS if opts.bits < 8 else {})}.items():
            setattr(tcfg, k, v)
    if opts.epochs is not None:
        tcfg.epochs = opts.epochs
    if opts.qat_epochs is not None:
        tcfg.qat_epochs = opts.qat_epochs
    if opts.qat_lr is not None:
        tcfg.qat_lr = opts.qat_lr
    tcfg.qat_distill = opts.distill
    tcfg.qat_freeze_bn = opts.qat_bn == "frozen"
    tcfg.__post_init__()
    return tcfg


def train_stage(out: Path, opts: TrainOptions, *, verbose=False, callback=None, data=None,
                float_model=None) -> dict:
    """Data -> float -> QAT -> integer model -> metrics, all in ``out``. ``data`` (as
    :func:`load_data` gives it for ``opts``) and a ``float_model`` trained on it may be given
    to share them between runs."""
    from model import train as T
    from model.convert import to_intmodel_for

    out = Path(out)
    t0 = time.perf_counter()
    # Data first: data that cannot be used (e.g. a horizon longer than it) leaves no run
    # directory behind, nor touches an existing one.
    data = load_data(opts) if data is None else data
    train_config(opts, data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)   # never leave a stale result behind
    result = T.train_run(train_config(opts, data), data, out, verbose=verbose, callback=callback,
                         float_model=float_model)
    t_train = time.perf_counter() - t0

    intmodel = to_intmodel_for(result.qat_model, data)
    intmodel.save(out)

    if data.task == "anomaly":
        metrics = dict(result.metrics)
        metrics.update(anomaly_metrics(intmodel, result.qat_model, data))
        intmodel.save(out)            # with the threshold chosen on validation
        metrics["seconds"]["convert"] = time.perf_counter() - t0 - t_train
        save_test_windows(out, intmodel, data)
        save_anomaly_scores(out, result, intmodel, data)
        write_json_atomic(out / "metrics.json", metrics)
        return metrics
    if data.task == "classify":
        metrics = dict(result.metrics)
        metrics.update(classify_metrics(intmodel, result.qat_model, data))
        metrics["seconds"]["convert"] = time.perf_counter() - t0 - t_train
        save_test_windows(out, intmodel, data)
        write_json_atomic(out / "metrics.json", metrics)
        return metrics
    metrics = dict(result.metrics)
    metrics.update(integer_metrics(intmodel, result.qat_model, data))
    metrics["seconds"]["convert"] = time.perf_counter() - t0 - t_train
    save_test_windows(out, intmodel, data)
    save_predictions(out, result, intmodel, data)
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def integer_metrics(intmodel, qat_model, data) -> dict:
    """Test RMSE of the integer model (per step too beyond one step) and its agreement with
    the fake-quant model (over every output)."""
    from model import train as T
    from model.qat import quantize
    import torch

    test = data.test
    raw = data.denormalise_features(test.X)
    codes = intmodel.pred_codes(intmodel.quantize_input(raw)).numpy()
    pred = intmodel.dequantize_output(codes, raw)
    truth = data.denormalise_target(test.y)
    m = T._metrics(pred, truth)
    del m["n"]
    with torch.no_grad():
        qat_out = torch.as_tensor(T.predict(qat_model, test.X))
    qat_codes = quantize(qat_out, qat_model.fake_quants()["pred"].qparams()).numpy()
    diff = np.abs(codes - qat_codes)
    return {"int": {"test": m},
            "int_vs_qat": {"windows": int(diff.shape[0]), "exact": float(np.mean(diff == 0)),
                           "within_1_lsb": float(np.mean(diff <= 1)), "max_lsb": int(diff.max())}}


def classify_metrics(intmodel, qat_model, data) -> dict:
    """The integer classifier on the test split (:func:`model.train.class_metrics`) and its
    agreement with the fake-quant model: the class, and the logit codes."""
    from model import train as T
    from model.qat import quantize
    import torch

    test = data.test
    logits, classes = intmodel.classify(intmodel.quantize_input(data.denormalise_features(test.X)))
    m = T.class_metrics(classes, test.y, len(data.class_names))
    with torch.no_grad():
        qat_out = torch.as_tensor(T.predict(qat_model, test.X))
    qat_codes = quantize(qat_out, qat_model.fake_quants()["logits"].qparams()).numpy()
    diff = np.abs(logits - qat_codes)
    return {"int": {"test": m},
            "int_vs_qat": {"windows": int(len(test.y)),
                           "same_class": float(np.mean(classes == qat_out.numpy().argmax(-1))),
                           "exact": float(np.mean((diff == 0).all(-1))),
                           "within_1_lsb": float(np.mean((diff <= 1).all(-1))),
                           "max_lsb": int(diff.max())}}


def set_threshold(intmodel, data) -> int:
    """The integer detector's threshold: the F1-best score code on the validation split (what
    the hardware compares with); set in its ``threshold`` operator. Returns it."""
    from model import train as T
    op = intmodel.op("pred")
    op.params["threshold"] = intmodel.qtype("score").qmax + 1       # scores only
    val = data.val
    scores, _ = intmodel.detect(intmodel.quantize_input(data.denormalise_features(val.X)))
    op.params["threshold"] = int(round(T.choose_threshold(scores, val.y, T.prevalence(data))))
    return op.params["threshold"]


def anomaly_metrics(intmodel, qat_model, data) -> dict:
    """The integer detector (its threshold from validation, in its model) on the test split,
    and its agreement with the fake-quant model's score codes."""
    from model import train as T
    from model.qat import quantize
    import torch

    t = set_threshold(intmodel, data)
    test = data.test
    scores, flags = intmodel.detect(intmodel.quantize_input(data.denormalise_features(test.X)))
    m = T.detection_metrics(flags, test.y)
    m["threshold"] = t
    with torch.no_grad():
        qat_out = torch.as_tensor(T.predict(qat_model, test.X))
    qat_codes = quantize(qat_out, qat_model.fake_quants()["score"].qparams()).numpy()
    diff = np.abs(scores - qat_codes)
    return {"int": {"test": m},
            "int_vs_qat": {"windows": int(len(test.y)), "exact": float(np.mean(diff == 0)),
                           "within_1_lsb": float(np.mean(diff <= 1)), "max_lsb": int(diff.max())}}


def save_anomaly_scores(out: Path, result, intmodel, data) -> None:
    """The test windows' end rows, values, labels, integer scores (dequantised) and flags, the
    float model's scores and the baseline's, with every threshold: the report's trace."""
    from model import train as T
    test = data.test
    codes, flags = intmodel.detect(intmodel.quantize_input(data.denormalise_features(test.X)))
    st = intmodel.tensors["score"]
    fl = T.predict(result.float_model, test.X)
    t_float = T.choose_threshold(T.predict(result.float_model, data.val.X), data.val.y,
                                 T.prevalence(data))
    b, bv = T.baseline_scores(data, test), T.baseline_scores(data, data.val)
    np.savez(out / "anomaly.npz", rows=test.times.astype("datetime64[s]").astype(np.int64),
             value=test.last, label=test.y, int_score=st.scale * (codes - st.qtype.zero_point),
             int_flag=flags, int_threshold=st.scale * (intmodel.op("pred").params["threshold"]
                                                       - st.qtype.zero_point),
             float_score=fl, float_flag=fl >= t_float, float_threshold=t_float,
             baseline_score=b, baseline_threshold=T.choose_threshold(bv, data.val.y, T.prevalence(data)))


def save_test_windows(out: Path, intmodel, data) -> None:
    """Quantised test windows with their expected integer outputs ((N,), or (N, horizon)), for
    the hardware checks."""
    test = data.test
    xq = intmodel.quantize_input(data.denormalise_features(test.X))
    codes = intmodel.pred_codes(xq)
    np.savez(out / "test_windows.npz", inputs=xq.numpy(), outputs=codes.numpy(),
             truth=data.denormalise_target(test.y), times=test.times.astype("datetime64[s]").astype(np.int64),
             last=test.last)


def save_predictions(out: Path, result, intmodel, data) -> None:
    """Test-period forecasts of the float, QAT and integer models, for the report."""
    from model import train as T
    test = data.test
    np.savez(out / "predictions.npz",
             times=test.times.astype("datetime64[s]").astype(np.int64),
             truth=data.denormalise_target(test.y),
             persistence=np.broadcast_to(T._per_step(np.asarray(test.last, np.float64), test.y),
                                         test.y.shape),
             float=T.forecast_target(result.float_model, data, test.X, T.predict(result.float_model, test.X)),
             qat=T.forecast_target(result.qat_model, data, test.X, T.predict(result.qat_model, test.X)),
             int=intmodel.predict(data.denormalise_features(test.X)))


def load_test_windows(run: Path) -> dict:
    path = Path(run) / "test_windows.npz"
    if not path.is_file():
        raise RunError(f"{path} is missing: run `intformer train` first")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
