"""Training: float pre-training, then quantisation-aware fine-tuning, evaluation, checkpoints.

Float phase: Adam + MSE on the normalised target, shuffled mini-batches, early stopping on
the *validation* split (patience in epochs; the best weights are restored).

QAT phase (starting from the best float weights):
1. calibration: observers on, quantisation off, model in eval mode (BN running stats), over
   ``calib_batches`` training batches -> initial ranges and adaptive choices;
2. fine-tuning with fake quantisation on, observers on (EMA keeps tracking), lower LR; with
   ``qat_freeze_bn`` batch-norm uses its running statistics (its folded affine, as in the
   integer model) so that training sees exactly the inference arithmetic; observers are
   frozen after ``freeze_observers_after`` epochs (None: keep observing until the end);
3. early stopping on the validation loss of the fake-quantised model (observers frozen
   during evaluation); the best state (weights + ranges) is restored; observers end frozen.

Metrics: RMSE / MAE in target units (deg F for the default data) on val and test for the
float model, the QAT model and the persistence baseline (prediction = last target value of
the window).

Classification (``ModelConfig.task == "classify"``): the same phases with cross-entropy on the
class indices (early stopping on the validation cross-entropy); metrics are accuracy, macro-F1
and the confusion matrix, and the baselines are the majority class and the nearest centroid
(the training windows' mean per class, Euclidean distance on the normalised windows).

Anomaly detection (``"anomaly"``): binary cross-entropy on the 0/1 window labels (the score is
a logit); the threshold of each detector is the F1-best on the validation split
(:func:`choose_threshold`), its metrics precision, recall and F1 on the test split; the baseline
scores a window by its largest absolute first difference over its last rows.

Everything is seeded (``TrainConfig.seed``): model init and batch order.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .data import Dataset, Split
from .qat import (FakeQuant, QuantConfig, init_learned_ranges, quant_params, range_parameters, set_collecting,
                  set_observing, set_quantising)
from .transformer import Forecaster, ModelConfig

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train_run",
    "train_float",
    "train_qat",
    "calibrate",
    "evaluate",
    "predict",
    "forecast_target",
    "training_target",
    "persistence_metrics",
    "load_run",
]


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    seed: int = 0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    epochs: int = 100
    patience: int = 15
    lr_decay: float = 0.5  # multiply the LR by this after lr_decay_patience epochs without improvement
    lr_decay_patience: int = 4
    qat_lr: float = 2e-4
    qat_range_lr: float = 1e-3  # learned step sizes (log scale) and zero points
    qat_epochs: int = 12
    qat_patience: int = 4
    calib_batches: int = 32
    qat_freeze_bn: bool = True
    # Distillation: the QAT loss is (1 - w) * MSE(target) + w * MSE(float model's output).
    qat_distill: float = 0.0
    freeze_observers_after: int | None = None
    grad_clip: float | None = 1.0
    # Classifier / detector targets smoothed: a class index's one-hot (a detector's 0 / 1) moved
    # this far towards uniform (0.5), which bounds the logits a model learns (a detector's
    # score: about +-log((1 - e/2) / (e/2))) and with them the ranges its tensors quantise.
    label_smoothing: float = 0.0
    max_train_windows: int | None = None  # quick runs: N training windows evenly spaced in time
    threads: int | None = 1  # torch intra-op threads during train_run (None: leave as is). For this
    # tiny model one thread is fastest (2 threads were 1.5-10x slower on the 2-core machine).

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if isinstance(self.quant, dict):
            self.quant = QuantConfig.from_dict(self.quant)
        for k in ("batch_size", "calib_batches"):
            if getattr(self, k) < 1:
                raise ValueError(f"TrainConfig.{k} must be >= 1")
        for k in ("epochs", "patience", "qat_epochs", "qat_patience"):
            if getattr(self, k) < 0:
                raise ValueError(f"TrainConfig.{k} must be >= 0")
        if self.lr <= 0 or self.qat_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing is in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.qat_distill <= 1.0:
            raise ValueError(f"TrainConfig.qat_distill is a weight in [0, 1], got {self.qat_distill}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["quant"] = self.quant.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


@dataclass
class TrainResult:
    float_model: Forecaster
    qat_model: Forecaster | None
    metrics: dict
    history: list[dict]
    out_dir: Path | None
    seconds: float


Callback = Callable[[dict], None]


# --------------------------------------------------------------------------------------------
# helpers


def training_target(data: Dataset, split: Split, forecast: str) -> np.ndarray:
    """What the network learns to output (normalised): the target, or for ``"change"`` its
    change from the window's last value, in the target's normalisation (the network then sees
    a small, zero-centred quantity, which a 4-bit output resolves far better)."""
    if forecast == "level" or data.task != "forecast":
        return split.y
    base = (data.last_target(split.X) - data.target_mean) / data.target_std
    return (split.y - _per_step(base, split.y)).astype(np.float32)


def _per_step(last: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A value per window (N,) against ``like`` (N,) or (N, horizon): the same for every step."""
    last = np.asarray(last)
    return last if np.ndim(like) == last.ndim else last[:, None]


def forecast_target(model: Forecaster, data: Dataset, X, out: np.ndarray) -> np.ndarray:
    """Network outputs ``out`` for normalised windows ``X`` -> forecasts in target units."""
    level = data.denormalise_target(out)
    if model.config.forecast == "change":
        level = level - data.target_mean + _per_step(data.last_target(X), level)
    return level


def _tensors(split: Split, limit: int | None = None, y=None):
    X, y = split.X, (split.y if y is None else y)
    if limit is not None and limit < len(y):
        idx = np.linspace(0, len(y) - 1, limit).round().astype(np.int64)
        X, y = X[idx], y[idx]
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(y))


def _batches(n: int, bs: int, gen: torch.Generator | None):
    """Shuffled mini-batches of ``bs`` windows. The ragged remainder is dropped when there is a
    full batch: batch-norm takes its statistics from each batch, and a last batch of a handful
    of windows (2 of 5,890 on the default data) moved the running statistics enough to swing
    the validation loss 4x from one epoch to the next."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    stop = n - n % bs if n >= bs else n
    for i in range(0, stop, bs):
        yield order[i : i + bs]


@torch.no_grad()
def predict(model: nn.Module, X, batch_size: int = 1024, threads: int | None = 1) -> np.ndarray:
    """Normalised predictions (N,), or (N, horizon), in eval mode (observers are left as they are).
    ``threads``: torch threads for the call (restored afterwards; None leaves them)."""
    was = model.training
    model.eval()
    X = torch.as_tensor(np.asarray(X, np.float32))
    with _threads(threads):
        out = [model(X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _metrics(pred_raw: np.ndarray, true_raw: np.ndarray) -> dict:
    """RMSE / MAE over every value; for forecasts of several steps ((N, horizon)), also per
    step (``rmse_steps``, ``mae_steps``: step 1 first)."""
    err = np.asarray(pred_raw, np.float64) - np.asarray(true_raw, np.float64)
    m = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(err.size)}
    if err.ndim == 2:
        m["rmse_steps"] = [float(v) for v in np.sqrt(np.mean(err**2, axis=0))]
        m["mae_steps"] = [float(v) for v in np.mean(np.abs(err), axis=0)]
    return m


def class_metrics(pred, truth, classes: int) -> dict:
    """Accuracy, macro-F1 (the mean over classes of F1; a class never predicted nor present
    counts 0) and the confusion matrix (rows: true class, columns: predicted) of class indices."""
    pred, truth = np.asarray(pred, np.int64).reshape(-1), np.asarray(truth, np.int64).reshape(-1)
    cm = np.zeros((classes, classes), np.int64)
    np.add.at(cm, (truth, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(classes), where=denom > 0)
    return {"accuracy": float(np.mean(pred == truth)) if len(truth) else 0.0,
            "macro_f1": float(f1.mean()), "confusion": cm.tolist(), "n": int(len(truth))}


def choose_threshold(scores, labels, prevalence: float | None = None) -> float:
    """The threshold ``t`` (flag: ``score >= t``) with the best F1 on ``scores`` of windows
    labelled ``labels``; among equals the highest (fewest alarms). ``prevalence``: the F1 of
    windows in which the anomalous ones are that share (the clean windows' false alarms
    weighted by ``P (1 - prevalence) / (prevalence N)`` for P anomalous and N clean windows);
    None: the windows as they are."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    w = 1.0
    if prevalence is not None and y.any() and (~y).any():
        w = y.sum() * (1.0 - prevalence) / (prevalence * (~y).sum())
    tp, fp = np.cumsum(y), w * np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]          # a threshold at each distinct score
    f1 = 2 * tp / (tp + fp + y.sum())
    f1 = np.where(last, f1, -1.0)
    best = np.flatnonzero(f1 == f1.max())[0]
    return float(s[best])


def detection_metrics(flags, labels) -> dict:
    """Precision, recall and F1 of 0/1 ``flags`` against 0/1 ``labels`` (0 where undefined)."""
    f, y = np.asarray(flags).astype(bool).reshape(-1), (np.asarray(labels) > 0.5).reshape(-1)
    tp, fp, fn = int((f & y).sum()), int((f & ~y).sum()), int((~f & y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "flagged": int(f.sum()), "n": int(len(y))}


def detection_report(val_scores, val_y, scores, y, prevalence: float | None = None) -> dict:
    """A detector's threshold from validation (:func:`choose_threshold`), and its metrics on
    the scored split."""
    t = choose_threshold(val_scores, val_y, prevalence)
    m = detection_metrics(np.asarray(scores) >= t, y)
    m["threshold"] = t
    return m


def prevalence(data: Dataset) -> float | None:
    """The share of anomalous windows ``data``'s thresholds are chosen for (None: as is)."""
    return data.counts.get("prevalence")


def baseline_scores(data: Dataset, split: Split) -> np.ndarray:
    """The baseline anomaly score: the largest absolute first difference of the value (the
    second feature) over the window's last ``counts["recent"]`` rows."""
    k = int(data.counts.get("recent", 1))
    dx = np.asarray(split.X[:, -k:, 1], np.float64) * data.feature_std[1] + data.feature_mean[1]
    return np.abs(dx).max(axis=1)


def baseline_anomaly_metrics(data: Dataset, split: str = "test") -> dict:
    return {"max_abs_diff": detection_report(baseline_scores(data, data.val), data.val.y,
                                             baseline_scores(data, data.split(split)),
                                             data.split(split).y, prevalence(data))}


def _bce(scores, y) -> float:
    return float(nn.functional.binary_cross_entropy_with_logits(
        torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)))


def _ce(logits, y) -> float:
    return float(nn.functional.cross_entropy(torch.as_tensor(logits, dtype=torch.float32),
                                             torch.as_tensor(y, dtype=torch.int64)))


def evaluate(model: nn.Module, data: Dataset, split: str = "val") -> dict:
    """RMSE / MAE in target units, plus the normalised MSE (``loss``); for a classifier
    :func:`class_metrics` and the cross-entropy (``loss``)."""
    s = data.split(split)
    p = predict(model, s.X)
    if data.task == "classify":
        m = class_metrics(p.argmax(-1), s.y, len(data.class_names))
        m["loss"] = _ce(p, s.y)
        return m
    if data.task == "anomaly":
        m = detection_report(predict(model, data.val.X), data.val.y, p, s.y, prevalence(data))
        m["loss"] = _bce(p, s.y)
        return m
    m = _metrics(forecast_target(model, data, s.X, p), data.denormalise_target(s.y))
    m["loss"] = float(np.mean((p.astype(np.float64) - training_target(data, s, model.config.forecast)) ** 2))
    return m


def baseline_class_metrics(data: Dataset, split: str = "test") -> dict:
    """The classification baselines on ``split``: the majority class of the training split and
    the nearest centroid (per-class mean of the normalised training windows)."""
    s, C = data.split(split), len(data.class_names)
    tr = data.train
    majority = np.full(len(s.y), int(np.bincount(tr.y, minlength=C).argmax()))
    flat = tr.X.reshape(len(tr.y), -1).astype(np.float64)
    cent = np.stack([flat[tr.y == c].mean(0) for c in range(C)])
    d = ((s.X.reshape(len(s.y), -1)[:, None, :] - cent[None]) ** 2).sum(-1)
    return {"majority": class_metrics(majority, s.y, C),
            "nearest_centroid": class_metrics(d.argmin(1), s.y, C)}


def persistence_metrics(data: Dataset, split: str = "test") -> dict:
    """The last observed value as the forecast of every step."""
    s = data.split(split)
    truth = data.denormalise_target(s.y)
    return _metrics(np.broadcast_to(_per_step(s.last, truth), truth.shape), truth)


def _val_loss(model, Xv, yv) -> float:
    p = predict(model, Xv)
    if model.config.task == "classify":
        return _ce(p, yv)
    if model.config.task == "anomaly":
        return _bce(p, yv)
    return float(np.mean((p.astype(np.float64) - yv.numpy()) ** 2))


def _fit(model, Xt, yt, Xv, yv, *, lr, epochs, patience, batch_size, weight_decay, grad_clip, gen,
         phase, history, emit, lr_decay=1.0, lr_decay_patience=0, on_epoch_start=None, on_train_end=None,
         range_lr=None, teacher=None, distill=0.0, label_smoothing=0.0):
    """Generic early-stopping loop; returns the best validation loss (best state restored).
    ``range_lr``: learning rate of the learned quantisation ranges (None: not trained).
    ``teacher``: outputs for ``Xt`` the loss also pulls towards, with weight ``distill``
    (validation and early stopping stay on the true targets)."""
    ranges = {id(p) for p in range_parameters(model)}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ranges]}]
    if range_lr is not None and ranges:
        groups.append({"params": range_parameters(model), "lr": range_lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    e = label_smoothing
    bce = nn.BCEWithLogitsLoss()
    loss_fn = {"classify": nn.CrossEntropyLoss(label_smoothing=e),
               "anomaly": lambda out, y: bce(out, y * (1.0 - e) + 0.5 * e)}.get(model.config.task, nn.MSELoss())
    teacher_fn = nn.MSELoss()       # to the float model's outputs (a classifier's: its logits)
    best = _val_loss(model, Xv, yv)
    best_state = copy.deepcopy(model.state_dict())
    emit({"phase": phase, "epoch": 0, "train_loss": None, "val_loss": best, "best": True})
    history.append({"phase": phase, "epoch": 0, "train_loss": None, "val_loss": best})
    bad = since_decay = 0
    for ep in range(1, epochs + 1):
        if on_epoch_start is not None:
            on_epoch_start(ep)
        model.train()
        tot, cnt = 0.0, 0
        for idx in _batches(len(Xt), batch_size, gen):
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, yb)
            if teacher is not None and distill > 0.0:
                loss = (1.0 - distill) * loss + distill * teacher_fn(out, teacher[idx])
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            tot += float(loss.detach()) * len(idx)
            cnt += len(idx)
        if on_train_end is not None:
            on_train_end(ep)
        vl = _val_loss(model, Xv, yv)
        improved = vl < best
        if improved:
            best, bad, since_decay = vl, 0, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            since_decay += 1
            if lr_decay_patience and lr_decay < 1.0 and since_decay >= lr_decay_patience:
                since_decay = 0
                for g in opt.param_groups:
                    g["lr"] *= lr_decay
        rec = {"phase": phase, "epoch": ep, "train_loss": tot / max(cnt, 1), "val_loss": vl,
               "lr": opt.param_groups[0]["lr"]}
        history.append(rec)
        emit({**rec, "best": improved})
        if bad >= patience:
            break
    model.load_state_dict(best_state)
    return best


def _emitter(verbose: bool, callback: Callback | None, t0: float):
    def emit(ev: dict):
        ev = {**ev, "elapsed": time.perf_counter() - t0}
        if callback is not None:
            callback(ev)
        if verbose:
            tl = "-" if ev.get("train_loss") is None else f"{ev['train_loss']:.4f}"
            if "message" in ev:
                print(f"[{ev['elapsed']:6.1f}s] {ev['message']}", flush=True)
            else:
                print(f"[{ev['elapsed']:6.1f}s] {ev['phase']:5s} epoch {ev['epoch']:3d} "
                      f"train {tl} val {ev['val_loss']:.4f}{' *' if ev.get('best') else ''}", flush=True)

    return emit


# --------------------------------------------------------------------------------------------
# phases


def train_float(config: TrainConfig, data: Dataset, *, history=None, emit=None) -> Forecaster:
    """Seeded float training with early stopping on validation."""
    with _threads(config.threads):
        return _train_float(config, data, history, emit)


def _train_float(config, data, history, emit) -> Forecaster:
    torch.manual_seed(config.seed)
    model = Forecaster(config.model, config.quant)
    _check_data(config, data)
    gen = torch.Generator().manual_seed(config.seed)
    Xt, yt, Xv, yv = _train_val(config, data)
    _fit(model, Xt, yt, Xv, yv, lr=config.lr, epochs=config.epochs, patience=config.patience,
         batch_size=config.batch_size, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
         lr_decay=config.lr_decay, lr_decay_patience=config.lr_decay_patience,
         gen=gen, phase="float", history=history if history is not None else [], emit=emit or (lambda e: None),
         label_smoothing=config.label_smoothing)
    model.eval()
    return model


@torch.no_grad()
def calibrate(model: Forecaster, X, batches: int = 32, batch_size: int = 128, seed: int = 0) -> None:
    """Observe ranges on float activations (quantisation off, eval-mode BN)."""
    set_quantising(model, False)
    set_observing(model, True)
    set_collecting(model, True)
    model.eval()
    X = torch.as_tensor(np.asarray(X, np.float32))
    gen = torch.Generator().manual_seed(seed)
    for i, idx in enumerate(_batches(len(X), batch_size, gen)):
        if i >= batches:
            break
        model(X[idx])
    set_observing(model, False)
    init_learned_ranges(model)
    set_collecting(model, False)


def train_qat(config: TrainConfig, data: Dataset, float_model: Forecaster, *, history=None, emit=None) -> Forecaster:
    """Calibrate, then fine-tune with fake quantisation (early stopping on validation).

    The QAT model is a new ``Forecaster(config.model, config.quant)`` initialised from
    ``float_model``'s weights; ``float_model`` is not modified."""
    with _threads(config.threads):
        return _train_qat(config, data, float_model, history, emit)


def _train_qat(config, data, float_model, history, emit) -> Forecaster:
    emit = emit or (lambda e: None)
    torch.manual_seed(config.seed + 1)
    # rebuilt from config.quant (so bit-widths/schemes may differ from the float model's)
    model = Forecaster(config.model, config.quant)
    # The network's weights; the quantisers (which may be learned in one and observed in the
    # other) are calibrated afresh below.
    quantiser_keys = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, FakeQuant)
                      for k in ("log_scale", "zero_point", "learned", "asymmetric")}
    state = {k: v for k, v in float_model.state_dict().items() if k not in quantiser_keys}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - quantiser_keys or unexpected:
        raise ValueError(f"the float model does not match the QAT model's shape: missing "
                         f"{sorted(set(missing) - quantiser_keys)}, unexpected {sorted(unexpected)}")
    Xt, yt, Xv, yv = _train_val(config, data)
    teacher = None
    if config.qat_distill > 0.0:
        teacher = torch.as_tensor(predict(float_model, Xt), dtype=torch.float32)
        if config.model.task != "classify":
            teacher = teacher.reshape(yt.shape)   # (the teacher term is MSE to its outputs)
    calibrate(model, Xt, config.calib_batches, config.batch_size, config.seed)
    set_quantising(model, True)
    model.set_freeze_bn(config.qat_freeze_bn)
    fz = config.freeze_observers_after

    def start(ep):  # observers track during training epochs (until frozen)
        set_observing(model, fz is None or ep <= fz)

    def end(ep):  # evaluation with frozen ranges
        set_observing(model, False)

    gen = torch.Generator().manual_seed(config.seed + 1)
    _fit(model, Xt, yt, Xv, yv, lr=config.qat_lr, epochs=config.qat_epochs, patience=config.qat_patience,
         batch_size=config.batch_size, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
         lr_decay=config.lr_decay, lr_decay_patience=config.lr_decay_patience,
         gen=gen, phase="qat", history=history if history is not None else [], emit=emit,
         on_epoch_start=start, on_train_end=end, range_lr=config.qat_range_lr,
         teacher=teacher, distill=config.qat_distill, label_smoothing=config.label_smoothing)
    set_observing(model, False)
    model.eval()
    return model


@contextlib.contextmanager
def _threads(n: int | None):
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _train_val(config: TrainConfig, data: Dataset):
    f = config.model.forecast
    return (*_tensors(data.train, config.max_train_windows, training_target(data, data.train, f)),
            *_tensors(data.val, None, training_target(data, data.val, f)))


def _check_data(config: TrainConfig, data: Dataset) -> None:
    c = config.model
    if c.forecast == "change" and data.target_feature is None:
        raise ValueError(f"the target {data.target_name!r} is not among the input features, so a "
                         f"change forecast has no last value to start from: add it to the features "
                         f"or set ModelConfig(forecast='level')")
    if data.task != c.task:
        raise ValueError(f"the data is for task {data.task!r} but the model for {c.task!r}")
    if c.task == "classify" and len(data.class_names) != c.classes:
        raise ValueError(f"the data has {len(data.class_names)} classes but the model "
                         f"{c.classes}; set ModelConfig(classes={len(data.class_names)})")
    if data.horizon != c.horizon:
        raise ValueError(f"data has horizon {data.horizon} but the model forecasts {c.horizon} "
                         f"steps; set ModelConfig(horizon={data.horizon})")
    if data.n_features != c.features or data.window != c.window:
        raise ValueError(
            f"data has window {data.window} x {data.n_features} features but the model expects "
            f"{c.window} x {c.features}; set ModelConfig(window={data.window}, features={data.n_features})"
        )


# --------------------------------------------------------------------------------------------
# the whole run


def train_run(config: TrainConfig | None, data: Dataset, out_dir=None, *, qat: bool = True,
              verbose: bool = False, callback: Callback | None = None,
              float_model: Forecaster | None = None) -> TrainResult:
    """Float training, then (``qat``) QAT fine-tuning; metrics; checkpoints in ``out_dir``.

    ``float_model``: a float model already trained on ``data`` (with ``config.model``'s shape;
    e.g. one shared by the designs of several targets): used instead of training one.

    Files written (if ``out_dir`` is not None): ``float.pt`` and ``qat.pt`` (state dicts),
    ``config.json`` (TrainConfig + data normalisation/feature description), ``metrics.json``,
    ``qparams.json`` (per-tensor quantisation of the QAT model), ``history.json``.
    ``callback`` receives one dict per epoch (phase, epoch, train_loss, val_loss, best, elapsed)
    and a few ``{"message": ...}`` events.
    """
    config = config or TrainConfig()
    _check_data(config, data)
    with _threads(config.threads):
        return _train_run(config, data, out_dir, qat, verbose, callback, float_model)


def _train_run(config, data, out_dir, qat, verbose, callback, float_model=None) -> TrainResult:
    t0 = time.perf_counter()
    emit = _emitter(verbose, callback, t0)
    history: list[dict] = []
    if float_model is None:
        emit({"message": f"float training on {len(data.train) if config.max_train_windows is None else min(len(data.train), config.max_train_windows)} windows"})
        fmodel = train_float(config, data, history=history, emit=emit)
    else:
        if float_model.config != config.model:
            raise ValueError(f"the float model's shape {float_model.config} is not the configured "
                             f"{config.model}")
        fmodel = float_model
    t_float = time.perf_counter() - t0
    metrics: dict = {"float": {s: evaluate(fmodel, data, s) for s in ("val", "test")}}
    if data.task == "anomaly":
        metrics["baseline"] = {"test": baseline_anomaly_metrics(data, "test")}
        f = metrics["float"]["test"]
        emit({"message": f"float test F1 {f['f1']:.3f} (baseline "
                         f"{metrics['baseline']['test']['max_abs_diff']['f1']:.3f})"})
    elif data.task == "classify":
        metrics["baseline"] = {s: baseline_class_metrics(data, s) for s in ("val", "test")}
        emit({"message": f"float test accuracy {metrics['float']['test']['accuracy']:.3f} "
                         f"(nearest centroid "
                         f"{metrics['baseline']['test']['nearest_centroid']['accuracy']:.3f})"})
    else:
        metrics["persistence"] = {s: persistence_metrics(data, s) for s in ("val", "test")}
        emit({"message": f"float test RMSE {metrics['float']['test']['rmse']:.3f} "
                         f"(persistence {metrics['persistence']['test']['rmse']:.3f})"})
    qmodel = None
    if qat:
        qmodel = train_qat(config, data, fmodel, history=history, emit=emit)
        metrics["qat"] = {s: evaluate(qmodel, data, s) for s in ("val", "test")}
        q = metrics["qat"]["test"]
        emit({"message": f"QAT test accuracy {q['accuracy']:.3f}" if data.task == "classify"
              else f"QAT test F1 {q['f1']:.3f}" if data.task == "anomaly"
              else f"QAT test RMSE {q['rmse']:.3f}"})
    seconds = time.perf_counter() - t0
    metrics["seconds"] = {"float": t_float, "total": seconds}
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(fmodel.state_dict(), out / "float.pt")
        if qmodel is not None:
            torch.save(qmodel.state_dict(), out / "qat.pt")
            (out / "qparams.json").write_text(json.dumps(quant_params(qmodel), indent=1))
        doc = {"train": config.to_dict(), "data": data.stats(), "qat": qmodel is not None}
        (out / "config.json").write_text(json.dumps(doc, indent=1))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return TrainResult(fmodel, qmodel, metrics, history, out, seconds)


def load_run(out_dir, which: str = "qat") -> tuple[Forecaster, dict]:
    """Rebuild a trained model from ``out_dir`` (``which`` = "float" or "qat"), in eval mode,
    observers frozen, quantisation on for "qat". Returns (model, config.json contents)."""
    if which not in ("float", "qat"):
        raise ValueError("which must be 'float' or 'qat'")
    out = Path(out_dir)
    cfg_path, w_path = out / "config.json", out / f"{which}.pt"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: run training first")
    doc = json.loads(cfg_path.read_text())
    tc = TrainConfig.from_dict(doc["train"])
    model = Forecaster(tc.model, tc.quant)
    model.load_state_dict(torch.load(w_path, map_location="cpu", weights_only=True))
    set_observing(model, False)
    set_quantising(model, which == "qat")
    model.eval()
    return model, doc
