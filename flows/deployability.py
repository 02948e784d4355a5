"""Models that fit the XC7S15 only with mixed precision: the deployability benchmark of
``intformer search`` (run on purpose: ``python -m flows.deployability``; minutes per shape).

For each model shape of :data:`SHAPES`:

1. **uniform 8 and uniform 6 bits**: a hardware-only search (the resource estimator, no
   training) over the multiplier and storage knobs per layer group of
   :class:`flows.search.SearchSpace`, minimising the largest utilisation. A shape "does not
   fit at uniform w bits" when the best design found still exceeds some resource; with
   ``--synth`` Yosys decides for the best uniform-6 design (on the float model quantised to 6
   bits) when its estimate is above 0.85 of some resource. This is a heuristic search, not a
   proof that no uniform design fits.
2. **mixed precision**: the widths per group free (4, 6, 8). By default
   (``--objective sensitivity``) the float model of the shape is trained first and each
   group's accuracy cost at 4 and 6 bits measured (:func:`width_sensitivity`); the search
   then widens, from the smallest uniform-4 design, the group that saves the most of that cost
   per unit of utilisation, while the estimate fits (:func:`sensitivity_search`). With
   ``--objective width`` it maximises the mean width instead (coordinate descent).

Both searches are coordinate descents from the smallest folding of the target preset (the
smallest folding needs the fewest resources; the latency of the result is reported).
3. with ``--synth``, Yosys (``synth_xilinx``) checks the mixed design before any training
   (:func:`confirmed_mixed_search`), on the shape's float model quantised to its widths
   without fine-tuning: while it is over :data:`SYNTH_LIMIT` of some resource,
   the margin shrinks by Yosys' ratio to the estimate and the search runs again; when the
   shrunk margin is below the smallest design, it aims halfway between (:func:`aimed_margin`);
   when Yosys leaves more than 2 % of the LUTs or FFs under the margin, the margin rises by
   the same ratio for one more search (:func:`raised_margin`).
4. the mixed design is QAT fine-tuned from a float model of the shape (as the search does),
   scored by its integer model on the validation and test splits, its cycles exact; with
   ``--synth`` the trained design is synthesised again to confirm the fit.

Prints a table; ``--json PATH`` writes every number.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

DEFAULT = dict(window=24, d_model=16, heads=1, layers=1, ffn=64, norm="batchnorm",
               activation="relu")

#: Shapes that the dataflow accelerator cannot fit at 8 or 6 bits (two transformer layers).
SHAPES = {
    "2 layers": dict(DEFAULT, layers=2),
    "2 layers, FFN 128": dict(DEFAULT, layers=2, ffn=128),
    "2 layers, d_model 24": dict(DEFAULT, layers=2, d_model=24, ffn=96),
    "3 layers, FFN 32": dict(DEFAULT, layers=3, ffn=32),
    "d_model 32, FFN 128": dict(DEFAULT, d_model=32, ffn=128),
    "d_model 24, window 48": dict(DEFAULT, d_model=24, ffn=96, window=48),
    "2 layers, FFN 96": dict(DEFAULT, layers=2, ffn=96),
    "2 layers, d_model 24, FFN 48": dict(DEFAULT, layers=2, d_model=24, ffn=48),
    "2 layers, d_model 24, FFN 64": dict(DEFAULT, layers=2, d_model=24, ffn=64),
    "2 layers, d_model 24, FFN 32": dict(DEFAULT, layers=2, d_model=24, ffn=32),
    "2 layers, d_model 24, FFN 48, window 16": dict(DEFAULT, layers=2, d_model=24, ffn=48,
                                                    window=16),
    "2 layers, window 48": dict(DEFAULT, layers=2, window=48),
    "2 layers, d_model 24, 2 heads": dict(DEFAULT, layers=2, d_model=24, heads=2, ffn=96),
    "2 layers, d_model 32, FFN 64": dict(DEFAULT, layers=2, d_model=32, ffn=64),
    "2 layers, d_model 24, 2 heads, FFN 48": dict(DEFAULT, layers=2, d_model=24, heads=2, ffn=48),
    "2 layers, d_model 20, FFN 40": dict(DEFAULT, layers=2, d_model=20, ffn=40),
    "2 layers, d_model 20, FFN 40, window 32": dict(DEFAULT, layers=2, d_model=20, ffn=40,
                                                    window=32),
    "2 layers, d_model 20, FFN 80": dict(DEFAULT, layers=2, d_model=20, ffn=80),
}


def _space(shape: dict, device: str):
    from .search import SearchSpace
    from model.data import load_weather
    features = load_weather().n_features if "features" not in shape else shape["features"]
    return SearchSpace(dict(shape, features=features), device)


def _minimal(space, params: dict) -> dict:
    """``params`` with every pe/simd/lanes knob at 1 (the smallest folding)."""
    out = dict(params)
    for k in space.choices:
        if k.split(".")[-1] in ("pe", "simd", "qk_lanes", "pv_lanes"):
            out[k] = 1
    return out


_MODELS: dict = {}


def _model_key(space, cand) -> tuple:
    return tuple(sorted(space.shape.items())), tuple(sorted(cand.bits.items()))


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace(",", "")


def _fit(space, cand):
    """(fits, largest utilisation, estimate) of a candidate: the estimator on a synthetic model
    of its shape and widths (cached per shape and widths: the hardware knobs do not change the model)."""
    from model.synthetic import random_intmodel
    from .estimate import estimate
    key = _model_key(space, cand)
    if key not in _MODELS:
        _MODELS[key] = random_intmodel(space.shape, bits=cand.bits, seed=0)
    try:
        est = estimate(_MODELS[key], cand.hw, space.device)
    except ValueError:
        return False, math.inf, None
    return est.fits, max(est.utilisation().values()), est


#: Largest estimated utilisation a mixed design may have: the estimator's LUT error (median
#: 2.2 %, p90 9.8 % leave-one-out) needs a margin before synthesis confirms the fit.
MARGIN = 0.95


def width_sensitivity(space, ctx, widths=(4, 6)) -> dict:
    """{width parameter: {w: validation RMSE increase}} of the shape's float model when that
    group alone is quantised to ``w`` bits and all others to 8 (post-training quantisation:
    calibrated, not fine-tuned). The increase is clipped at 0 and is 0 at 8 bits.

    This is what the mixed search spends its budget by: a group whose 4 bits cost the float
    model little accuracy gives up its width before one whose 4 bits cost much."""
    from model import train as T

    def val_rmse(params):
        return T.evaluate(_ptq_model(space.candidate(params), ctx), ctx.data, "val")["rmse"]

    base_params = space.anchor(8)
    base = val_rmse(base_params)
    out = {}
    for k in (k for k in space.searched if k.startswith("bits.")):
        out[k] = {8: 0.0}
        for w in widths:
            if w in space.choices[k]:
                out[k][w] = max(0.0, val_rmse({**base_params, k: w}) - base)
    return out


def sensitivity_search(space, sensitivity: dict, *, margin: float = MARGIN):
    """The most accurate mixed design expected under ``margin``, the expected RMSE cost of a
    design being the sum of its groups' ``sensitivity``. Two greedy passes on the hardware
    knobs of the smallest uniform-4 design of :func:`hardware_search`, the better one kept:

    * narrowing from 8 bits everywhere: while over the margin, the step (8 to 6, 6 to 4) that
      costs the least per unit of largest utilisation it saves (up to what the margin still
      needs); then widening as below;
    * widening from 4 bits everywhere: while under the margin, the step (4 to 6, 6 to 8) that
      saves the most per unit of largest utilisation it adds.

    Widening alone tends to spend the budget on cheap groups and leave an expensive, important
    one (the embedding feeds every layer) at 4 bits; narrowing alone stops at the first design
    that fits. Returns (fits, utilisation, candidate, estimate)."""
    fits, util, cand, est = hardware_search(space, bits=4)
    if not (fits and util <= margin):
        return fits, util, cand, est

    def cost(params):
        return sum(s[params[k]] for k, s in sensitivity.items())

    def step(params, util, direction):
        """The best single-width step from ``params`` (None: none left): rank, params, fit."""
        best = None
        for k, cost_of in sensitivity.items():
            ws = sorted(cost_of)
            i = ws.index(params[k]) + direction
            if not 0 <= i < len(ws):
                continue
            trial = {**params, k: ws[i]}
            c = space.candidate(trial)
            f, u, e = _fit(space, c)
            if direction > 0:
                if not (f and u <= margin):
                    continue
                # free steps first, then the best saving per unit; equal savings: the cheaper
                rank = ((cost_of[params[k]] - cost_of[ws[i]]) / max(u - util, 1e-4), util - u)
            else:
                if u >= util:
                    continue
                # a saving beyond what the margin needs is worth nothing
                saved = max(min(util - u, util - margin), 1e-4)
                rank = (-(cost_of[ws[i]] - cost_of[params[k]]) / saved, util - u)
            if best is None or rank > best[0]:
                best = (rank, trial, (f, u, c, e))
        return best

    def widen(params, found):
        while (s := step(params, found[1], +1)) is not None:
            params, found = s[1], s[2]
        return params, found

    results = [widen(dict(cand.params), (fits, util, cand, est))]
    params = {**cand.params, **{k: max(s) for k, s in sensitivity.items()}}
    c = space.candidate(params)
    f, u, e = _fit(space, c)
    found = (f, u, c, e)
    while not (found[0] and found[1] <= margin):
        s = step(params, found[1], -1)
        if s is None:
            break
        params, found = s[1], s[2]
    if found[0] and found[1] <= margin:
        results.append(widen(params, found))
    params, found = min(results, key=lambda r: cost(r[0]))
    return found


def hardware_search(space, *, bits: int | None, rounds: int = 1, margin: float = MARGIN):
    """Best design of ``space`` by the estimator alone, by coordinate descent from the smallest
    folding of the target preset: every multiplier and storage knob (and, with ``bits=None``,
    every width) is tried in turn and the best value kept. With ``bits`` the widths are fixed
    and the objective is the largest utilisation; without, designs that fit come first, then
    the widest. Returns (fits, utilisation, candidate, estimate)."""
    if bits is None:
        # mixed: start from the widest uniform design that fits, then widen group by group
        for w in (6, 4):
            fits, util, cand, _ = hardware_search(space, bits=w, rounds=rounds)
            if fits and util <= margin:
                break
        start = cand.params
    else:
        start = _minimal(space, space.anchor(bits))
    keys = [k for k in space.searched
            if k.split(".")[-1] not in ("pe", "simd", "qk_lanes", "pv_lanes")
            and (bits is None or not k.startswith("bits."))]

    def score(params):
        cand = space.candidate(params)
        fits, util, est = _fit(space, cand)
        widths = [v for k, v in params.items() if k.startswith("bits.")]
        ok = fits and util <= margin
        s = util if bits else ((-sum(widths) / len(widths) / 8) if ok else 10 + util)
        return s, (fits, util, cand, est)

    params = dict(start)
    best, info = score(params)
    for _ in range(rounds):
        for k in keys:
            for v in space.choices[k]:
                if v == params[k]:
                    continue
                s, i = score({**params, k: v})
                if s < best - 1e-9:
                    best, info, params = s, i, {**params, k: v}
    return info


#: Largest Yosys utilisation of a design before it is trained. The trained model's constants
#: (requantisation multipliers, ROM contents) move the count: from a synthetic model's by up
#: to +4 % (d_model 20, FFN 40, window 32: 7,687 LUT synthetic, 8,017 trained), so the check
#: synthesises the float model quantised without fine-tuning when there is one
#: (:func:`ptq_intmodel`). From that model the 12-epoch fine-tune still moved the count by -4.4
#: to +4.3 % (d_model 20, FFN 40: 7,949 to 7,895 LUT; FFN 128: 7,919 to 8,257 and, another
#: design, 7,784 to 7,442), so no limit below 1 decides before training; the trained design's
#: synthesis does (``synthesis_fits``), and one over the device gets one more search.
SYNTH_LIMIT = 1.0


def _ptq_model(cand, ctx):
    """The QAT model of ``cand``'s widths from the float model of ``ctx``, calibrated but not
    fine-tuned (post-training quantisation)."""
    from model import train as T
    from .search import qat_config
    cfg = qat_config(ctx.opts, ctx.data, cand)
    cfg.qat_epochs = 0
    return T.train_qat(cfg, ctx.data, ctx.float_model)


def ptq_intmodel(cand, ctx):
    """The integer model of :func:`_ptq_model`."""
    from .search import to_integer
    return to_integer(_ptq_model(cand, ctx), ctx.data)


def mixed_search(space, *, margin: float, rounds: int = 1, sensitivity: dict | None = None):
    """The mixed-precision design: by :func:`sensitivity_search` when the widths' accuracy
    costs are known, else the widest design of :func:`hardware_search`."""
    if sensitivity is not None:
        return sensitivity_search(space, sensitivity, margin=margin)
    return hardware_search(space, bits=None, rounds=rounds, margin=margin)


def _worst(rep) -> tuple[str, float]:
    """The resource of a Yosys report nearest its capacity and its utilisation."""
    worst = max(rep.capacity, key=lambda k: rep.used[k] / rep.capacity[k])
    return worst, rep.used[worst] / rep.capacity[worst]


def tightened_margin(rep, est, util: float) -> float:
    """The estimated utilisation to aim at after a design estimated at ``util`` (``est``) came
    out of Yosys as ``rep``, over :data:`SYNTH_LIMIT`: the estimator's error on this design
    says how much lower to aim, so that the worst resource would come out at the limit."""
    worst, synth_util = _worst(rep)
    ratio = rep.used[worst] / est.used[worst] if est.used.get(worst) else 1.0
    return min(util * SYNTH_LIMIT / synth_util, SYNTH_LIMIT / ratio)


def aimed_margin(space, rep, est, util: float, *, between: bool = True) -> float:
    """The margin of the next search after a design estimated at ``util`` came out of Yosys
    over the device: :func:`tightened_margin`, or, when that leaves no design (it is below the
    smallest design's estimate) and ``between``, halfway between the smallest design and this
    one, since the estimator's error differs from design to design."""
    margin = tightened_margin(rep, est, util)
    if not between:
        return margin
    smallest_util = hardware_search(space, bits=4)[1]
    if margin < smallest_util:
        margin = (smallest_util + util) / 2
    return margin


def confirmed_mixed_search(space, *, margin: float, out: Path, attempts: int = 4,
                           rounds: int = 1, sensitivity: dict | None = None, ctx=None):
    """The mixed-precision search, checked by Yosys before any training: the best design under
    ``margin`` is synthesised (on :func:`ptq_intmodel` with a training context ``ctx``, else on
    the synthetic model of its widths); while some resource is
    above :data:`SYNTH_LIMIT` of the device, the margin shrinks by the ratio of Yosys to the
    estimate on that resource and the search runs again. When no design is left under the
    shrunk margin, the margin is aimed halfway between the smallest design (uniform 4 bits) and
    the last one instead, since the estimator's error differs from design to design and the
    designs in between are the most accurate left; the last attempt takes the smallest design
    if it is estimated below the last one. When even the first search leaves nothing under the
    margin, the smallest design is synthesised if it is estimated to fit the device: the margin
    is there to choose among designs, and with one left Yosys decides. When Yosys puts a
    design in the device with its LUTs and FFs (the estimated resources) more than
    :data:`RAISE_SLACK` under the margin, the estimator was high on this shape: the margin
    rises by Yosys' ratio to the estimate (:func:`raised_margin`). Once Yosys has put one
    design in and one over, the next margin is halfway between their estimates (the error
    differs from design to design). Ends when the attempts are spent or the search returns a
    design already synthesised. Returns (the widest design Yosys put in the device, its
    estimate, its Yosys report, the attempts as dicts) or a None candidate when nothing fits."""
    from hw.accelerator import Accelerator
    from .xilinx import synth_xc7s15
    history = []
    last_util = None
    confirmed, over_util = None, None   # widest design Yosys put in; lowest estimate put over
    tried = []
    for attempt in range(attempts):
        fits, util, cand, est = mixed_search(space, margin=margin, rounds=rounds,
                                             sensitivity=sensitivity)
        smallest = not (fits and util <= margin)
        if confirmed is not None and (smallest or cand.params in tried):
            history.append({"margin": margin, "max_utilisation": util, "same_design": True})
            break                       # nothing new between what is known
        if smallest and not (fits and (last_util is None or util < last_util - 1e-9)):
            history.append({"margin": margin, "fits_estimate": False, "max_utilisation": util})
            return None, est, None, history
        tried.append(cand.params)
        model = _MODELS[_model_key(space, cand)] if ctx is None else ptq_intmodel(cand, ctx)
        rep = synth_xc7s15(Accelerator(model, cand.hw), out / f"synth_attempt{attempt}",
                           timing=False)
        worst, synth_util = _worst(rep)
        history.append({"margin": margin, "estimate": est.used, "synthesis": rep.used,
                        "max_utilisation": util, "synthesis_utilisation": synth_util})
        print(f"  margin {margin:.3f}: estimate {est.used}, Yosys {rep.used} "
              f"({worst} {100 * synth_util:.1f} %)", flush=True)
        if synth_util <= SYNTH_LIMIT:
            confirmed = (cand, est, rep, util)
            if over_util is not None:
                margin = (util + over_util) / 2
                continue
            up = raised_margin(rep, est, margin)
            if up is None:
                break
            margin = up
            continue
        if confirmed is not None:
            over_util = util if over_util is None else min(over_util, util)
            margin = (confirmed[3] + over_util) / 2
            continue
        if smallest:
            break
        last_util = util
        margin = aimed_margin(space, rep, est, util, between=attempt < attempts - 2)
    if confirmed is not None:
        return (*confirmed[:3], history)
    return None, est, None, history


#: Resources the estimator predicts with an error (the others it counts exactly).
ESTIMATED_RESOURCES = ("LUT", "FF", "LC")
#: How far under the margin (as a fraction of the device) Yosys must put the estimated
#: resources of a confirmed design before the search aims higher.
RAISE_SLACK = 0.02


def raised_margin(rep, est, margin: float) -> float | None:
    """The margin scaled by Yosys' ratio to the estimate on the estimated resource nearest its
    capacity, when Yosys puts that resource more than :data:`RAISE_SLACK` under ``margin``;
    else None. (Memories and DSPs are exact: their utilisation says nothing of the error.)"""
    kinds = [k for k in rep.capacity if k in ESTIMATED_RESOURCES and est.used.get(k)]
    if not kinds:
        return None
    k = max(kinds, key=lambda k: rep.used[k] / rep.capacity[k])
    if rep.used[k] / rep.capacity[k] >= margin - RAISE_SLACK:
        return None
    return margin * est.used[k] / rep.used[k]


def training_context(space, out: Path, epochs: int):
    """The data and the float model of the shape (trained once into ``out/float``), with QAT
    fine-tunes of ``epochs`` epochs (as the search trains its candidates)."""
    from .run import TrainOptions, load_data
    from .search import SearchOptions, SharedContext
    s = space.shape
    train = TrainOptions(window=s["window"], d_model=s["d_model"], heads=s["heads"],
                         layers=s["layers"], ffn=s["ffn"], norm=s["norm"],
                         activation=s["activation"])
    opts = SearchOptions(device=space.device, out=out, trials=1, epochs=epochs, train=train)
    out.mkdir(parents=True, exist_ok=True)
    return SharedContext(opts, print, load_data(train))()


def train_and_score(space, cand, ctx):
    """QAT fine-tune of ``cand`` from the float model of ``ctx``: (integer model, metrics)."""
    from .search import integer_rmse, latency_cycles, to_integer
    data = ctx.data
    qat, _ = ctx.finetune(cand)
    im = to_integer(qat, data)
    return im, {"val_rmse": integer_rmse(im, data, "val"), "test_rmse": integer_rmse(im, data, "test"),
                "cycles": latency_cycles(im, cand.hw)}


def shape_row(name: str, shape: dict, a) -> dict:
    """One shape of the benchmark with the options ``a`` of :func:`main`: the best uniform
    designs, then (if neither fits) the mixed design, checked, trained and synthesised."""
    t0 = time.perf_counter()
    space = _space(shape, a.device)
    row = {"shape": name, "config": space.shape}
    out = Path(a.out) / _slug(name)
    # the float model, trained on first need: the sensitivities, the Yosys checks (on it
    # quantised: real constants) and the fine-tune use it
    ctx = None
    wants_ctx = a.objective == "sensitivity" or not a.no_train

    def context():
        return training_context(space, out, a.epochs) if wants_ctx else None
    for w in (8, 6):
        fits, util, cand, est = hardware_search(space, bits=w, rounds=a.rounds)
        row[f"uniform{w}"] = {"fits": fits, "max_utilisation": util, "resources": est.used,
                              "over": est.over()}
        print(f"{name}: uniform {w} bits: best max utilisation {util:.2f} "
              f"({'fits' if fits else '; '.join(est.over())})", flush=True)
        if w == 6 and a.synth and util > 0.85:
            # near or over the limit: Yosys decides on the best uniform design, with the
            # same constants as the mixed design's check
            from hw.accelerator import Accelerator
            from .xilinx import synth_xc7s15
            ctx = ctx or context()
            model = (_MODELS[_model_key(space, cand)] if ctx is None
                     else ptq_intmodel(cand, ctx))
            rep = synth_xc7s15(Accelerator(model, cand.hw), out / "synth_uniform6",
                               timing=False)
            row["uniform6"].update(synthesis=rep.used, fits=rep.fits)
            print(f"{name}: uniform 6 bits, Yosys: {rep.summary()}", flush=True)
    if row["uniform8"]["fits"] or row["uniform6"]["fits"]:
        print(f"{name}: fits at a uniform width: not a mixed-precision case", flush=True)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        return row
    ctx = ctx or context()
    sens = None
    if a.objective == "sensitivity":
        sens = width_sensitivity(space, ctx)
        row["sensitivity"] = sens
        print(f"{name}: validation RMSE cost of 4 bits (others 8): " + ", ".join(
            f"{k[5:]} {v.get(4, 0):.2f}" for k, v in sorted(sens.items(),
                                                 key=lambda kv: -kv[1].get(4, 0))),
            flush=True)
    margin = a.margin
    # a trained design that Yosys puts over the device: one more search, aimed lower by
    # its ratio to the estimate (the fine-tune moves the count by a few %), see aimed_margin
    for trained_attempt in range(2 if a.synth and not a.no_train else 1):
        if a.synth:
            cand, est, rep, history = confirmed_mixed_search(
                space, margin=margin, out=out / f"trained{trained_attempt}", rounds=a.rounds,
                sensitivity=sens, ctx=ctx)
            row.setdefault("mixed_attempts", []).extend(history)
            fits, util = cand is not None, history[-1]["max_utilisation"]
        else:
            fits, util, cand, est = mixed_search(space, margin=margin, rounds=a.rounds,
                                                 sensitivity=sens)
            fits = fits and util <= margin
        if cand is None:
            print(f"{name}: mixed: no design confirmed by Yosys", flush=True)
            row.setdefault("mixed", {"fits": False, "max_utilisation": util, "bits": {}})
            break
        if "mixed" in row:
            row.setdefault("mixed_trained_over", []).append(row["mixed"])
        row["mixed"] = {"fits": fits, "max_utilisation": util, "bits": cand.params,
                        "hw": cand.hw, "resources": est.used}
        print(f"{name}: mixed: {'fits' if fits else 'does not fit'}, max utilisation "
              f"{util:.2f}", flush=True)
        if not fits or a.no_train:
            break
        im, metrics = train_and_score(space, cand, ctx)
        row["mixed"].update(metrics)
        im.save(out / "chosen")
        (out / "chosen" / "hw_config.json").write_text(json.dumps(cand.hw, indent=1))
        print(f"{name}: mixed design: validation RMSE {metrics['val_rmse']:.3f}, test RMSE "
              f"{metrics['test_rmse']:.3f}, {metrics['cycles']:,} cycles", flush=True)
        if not a.synth:
            break
        from hw.accelerator import Accelerator
        from .xilinx import synth_xc7s15
        rep = synth_xc7s15(Accelerator(im, cand.hw), out / f"synth{trained_attempt}",
                           timing=False)
        row["mixed"].update(synthesis=rep.used, synthesis_fits=rep.fits)
        print(f"{name}: Yosys: {rep.summary()}", flush=True)
        if rep.fits:
            break
        margin = aimed_margin(space, rep, est, util)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def print_table(rows) -> None:
    print("\n| shape | uniform 8 b (best max util.) | uniform 6 b | mixed: fits | mean width | "
          "val RMSE | test RMSE | cycles |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "mixed" not in r:
            print(f"| {r['shape']} | {r['uniform8']['max_utilisation']:.2f} | "
                  f"{r['uniform6']['max_utilisation']:.2f} | (fits uniform) | | | | |")
            continue
        m = r["mixed"]
        # a synthesised trained design decides; else the check before training
        fit = m.get("synthesis_fits", m["fits"])
        widths = [v for k, v in m["bits"].items() if k.startswith("bits.")] or [math.nan]
        print(f"| {r['shape']} | {r['uniform8']['max_utilisation']:.2f} | "
              f"{r['uniform6']['max_utilisation']:.2f} | {fit} ({m['max_utilisation']:.2f}) | "
              f"{sum(widths) / len(widths):.2f} | {m.get('val_rmse', float('nan')):.3f} | "
              f"{m.get('test_rmse', float('nan')):.3f} | {m.get('cycles', 0):,} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.deployability", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="xc7s15", choices=["xc7s15", "ice40up5k"])
    ap.add_argument("--rounds", type=int, default=1, help="coordinate-descent rounds per search")
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs of the mixed design")
    ap.add_argument("--out", default="runs/deployability")
    ap.add_argument("--only", nargs="+", help="shape names (default: all)")
    ap.add_argument("--no-train", action="store_true", help="estimator searches only")
    ap.add_argument("--synth", action="store_true", help="synthesise the mixed design too")
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help="largest estimated utilisation of the mixed design (default %(default)s)")
    ap.add_argument("--objective", choices=["sensitivity", "width"], default="sensitivity",
                    help="what the mixed search maximises: the accuracy expected from each "
                         "group's measured width sensitivity (trains the float model first), "
                         "or the mean width")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)
    rows = [shape_row(name, shape, a) for name, shape in SHAPES.items()
            if not a.only or name in a.only]
    print_table(rows)
    if a.json:
        from .run import write_json_atomic
        write_json_atomic(Path(a.json), json.loads(json.dumps(rows, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
