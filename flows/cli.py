"""`intformer`: from a time-series to a verified integer-only FPGA accelerator.

Every stage works on a run directory (see flows/run.py) and can be run on its own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EPILOG = """examples:
  intformer demo --out runs/demo                 # everything on the default weather data
  intformer train --out runs/w8 --bits 8         # train, quantise, convert to integer
  intformer train --out runs/mix --bits 8 --bits-map 'l0.ffn_hidden=4,*.weight=6'
  intformer train --out runs/mine --csv data.csv --time-column time \\
        --features a,b,c --target c              # your own CSV
  intformer search --device xc7s15 --out runs/search --trials 40   # design-space search
"""


class Progress:
    """Progress lines on a terminal (or with --verbose); silent with --quiet or when piped,
    except for the main job's long commands (``piped``), whose logs are often all a user has."""

    def __init__(self, quiet: bool, verbose: bool, piped: bool = False):
        self.enabled = not quiet and (verbose or piped or sys.stderr.isatty())
        self.verbose = verbose
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def training_event(self, ev: dict) -> None:
        if "message" in ev:
            self(ev["message"])
        elif ev.get("train_loss") is not None and (self.verbose or ev.get("epoch", 0) % 5 == 0):
            val = ev.get("val_loss")
            self(f"{ev.get('phase', 'train')} epoch {ev.get('epoch')}: train loss {ev['train_loss']:.4f}"
                 + (f", validation loss {val:.4f}" if val is not None else ""))


def _parse_bits_map(text: str | None) -> dict:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        name, sep, bits = item.partition("=")
        if not sep or not bits.strip().lstrip("-").isdigit():
            raise SystemExit(f"--bits-map: expected NAME=BITS items separated by commas, got {item!r}")
        out[name.strip()] = int(bits)
    return out


def _add_shape_args(p):
    p.add_argument("--window", type=int, default=24, help="input window length L (default 24)")
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--ffn", type=int, default=None, help="FFN width (default 4*d_model)")
    p.add_argument("--norm", choices=["batchnorm", "layernorm"], default="batchnorm")
    from model.ops import activations      # the registered ones: a new module adds a choice
    p.add_argument("--activation", choices=activations(), default="relu")


def _add_data_args(p):
    p.add_argument("--max-train-windows", type=int, default=None,
                   help="train on the first N training windows only (quick runs)")
    p.add_argument("--task", choices=["forecast", "classify", "anomaly"], default="forecast",
                   help="forecast the target (default); classify labelled series (--dataset "
                        "italy-power-demand, or --csv with one example per row and --target the "
                        "class column; the window is the series' length); or score windows for "
                        "anomalies (--dataset ucr-internal-bleeding-16, or --csv with --features "
                        "VALUE --target 0/1-LABEL)")
    p.add_argument("--horizon", type=int, default=1,
                   help="forecast the next H steps of the target per window (default 1)")
    p.add_argument("--csv", default=None, help="your own CSV instead of the default weather data")
    p.add_argument("--dataset", default=None,
                   help="a public dataset by name instead of --csv (`python -m flows.datasets` lists them)")
    p.add_argument("--time-column", default=None)
    p.add_argument("--features", default=None, help="comma-separated feature columns (with --csv)")
    p.add_argument("--target", default=None, help="target column (with --csv)")
    p.add_argument("--forecast", choices=["auto", "change", "level"], default="auto",
                   help="forecast the change from the last value of the target (needs the target "
                        "among the features) or its level; auto: change when possible")


def _add_train_args(p):
    _add_shape_args(p)
    p.add_argument("--bits", type=int, default=8, help="default bit-width of every tensor, 2..8")
    p.add_argument("--bits-map", default=None,
                   help="mixed precision: NAME=BITS,... (tensor names or patterns like '*.weight')")
    p.add_argument("--scheme", choices=["adaptive", "symmetric", "asymmetric"], default="adaptive")
    p.add_argument("--ranges", choices=["learned", "observed"], default="learned",
                   help="quantisation ranges: learned step sizes from MSE-optimal clipping (default) "
                        "or min/max observers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="maximum float epochs")
    p.add_argument("--qat-epochs", type=int, default=None)
    p.add_argument("--qat-lr", type=float, default=None, help="QAT learning rate (default 2e-4)")
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight in [0, 1] of the float model's output in the QAT loss (default 0)")
    p.add_argument("--qat-bn", choices=["frozen", "train"], default="frozen",
                   help="batch-norm statistics during QAT: frozen at the float model's (default) "
                        "or re-estimated on the quantised activations")
    _add_data_args(p)


def _shape_and_data(a) -> dict:
    """TrainOptions fields of the model shape and the data options (train, demo, search)."""
    if a.dataset:
        from .datasets import dataset_options
        if a.csv:
            raise ValueError("give --dataset or --csv, not both")
        return {**_shape_and_data(argparse.Namespace(**{**vars(a), "dataset": None})),
                **dataset_options(a.dataset)}
    return {"window": a.window, "horizon": a.horizon, "d_model": a.d_model, "heads": a.heads, "layers": a.layers,
            "ffn": a.ffn, "norm": a.norm, "activation": a.activation, "seed": a.seed,
            "max_train_windows": a.max_train_windows, "csv": a.csv,
            "time_column": a.time_column,
            "feature_columns": a.features.split(",") if a.features else None,
            "target_column": a.target, "forecast": a.forecast, "task": a.task}


def _train_options(a):
    from .run import TrainOptions
    return TrainOptions(**_shape_and_data(a), bits=a.bits, bits_map=_parse_bits_map(a.bits_map),
                        scheme=a.scheme, ranges=a.ranges, epochs=a.epochs, qat_epochs=a.qat_epochs,
                        qat_lr=a.qat_lr, distill=a.distill, qat_bn=a.qat_bn)


def cmd_train(a, progress: Progress) -> int:
    from .run import train_stage
    progress(f"training into {a.out}")
    m = train_stage(Path(a.out), _train_options(a), verbose=False, callback=progress.training_event)
    progress("done")
    if "baseline" in m and "max_abs_diff" in m["baseline"]["test"]:      # an anomaly detector
        b = m["baseline"]["test"]["max_abs_diff"]
        print("test precision / recall / F1: " + "  ".join(
            f"{name} {r['precision']:.3f} / {r['recall']:.3f} / {r['f1']:.3f}" for name, r in (
                ("float", m["float"]["test"]), ("QAT", m["qat"]["test"]),
                ("integer", m["int"]["test"]), ("baseline |dx|", b)))
              + f"  (integer threshold code {m['int']['test']['threshold']}, chosen on validation)")
        return 0
    if "baseline" in m:         # a classifier
        b = m["baseline"]["test"]
        print("test accuracy / macro-F1: " + "  ".join(
            f"{name} {r['accuracy']:.3f} / {r['macro_f1']:.3f}" for name, r in (
                ("float", m["float"]["test"]), ("QAT", m["qat"]["test"]),
                ("integer", m["int"]["test"]), ("nearest centroid", b["nearest_centroid"]),
                ("majority", b["majority"])))
              + f"  (integer = QAT class on {100 * m['int_vs_qat']['same_class']:.1f}% of windows)")
        return 0
    print(f"test RMSE: float {m['float']['test']['rmse']:.3f}  QAT {m['qat']['test']['rmse']:.3f}  "
          f"integer {m['int']['test']['rmse']:.3f}  persistence {m['persistence']['test']['rmse']:.3f}"
          f"  (integer = QAT on {100 * m['int_vs_qat']['exact']:.1f}% of windows, "
          f"within 1 LSB on {100 * m['int_vs_qat']['within_1_lsb']:.1f}%)")
    if "rmse_steps" in m["float"]["test"]:
        for name, key in (("float", "float"), ("QAT", "qat"), ("integer", "int"),
                          ("persistence", "persistence")):
            steps = "  ".join(f"{v:.3f}" for v in m[key]["test"]["rmse_steps"])
            print(f"  per step t+1..t+{len(m[key]['test']['rmse_steps'])}, {name:11s}: {steps}")
    return 0


def cmd_build(a, progress: Progress) -> int:
    from .build import build
    for target in a.target:
        doc = build(Path(a.run), target, progress=progress)
        print(f"{target}: {doc['summary']}  ->  {'fits' if doc['fits'] else 'DOES NOT FIT'}")
        if not doc["fits"] and a.check:
            return 1
    return 0


def cmd_verify(a, progress: Progress) -> int:
    from .build import verify
    doc = verify(Path(a.run), target=a.target, amaranth_windows=a.amaranth_windows,
                 compiled_windows=a.windows, ghdl_windows=a.ghdl_windows, progress=progress)
    names = ", ".join(n for n in doc["executors"])
    print(f"bit-exact check on {doc['windows']} windows with {names}: "
          f"{doc['mismatches']} mismatching windows; latency {doc['latency']['cycles']} cycles "
          f"= {doc['latency']['us']:.2f} us at {doc['latency']['clock_mhz']:g} MHz")
    return 0 if doc["mismatches"] == 0 else 1


def cmd_report(a, progress: Progress) -> int:
    from . import report
    j, h = report.write(Path(a.run))
    print(f"wrote {j} and {h}")
    return 0


def _forecast_only(a) -> None:
    if getattr(a, "task", "forecast") != "forecast":
        raise ValueError(f"`intformer {a.command}` forecasts; for --task {a.task} run train, "
                         f"verify, build, report, search and accuracy (README, 'Tasks')")


def cmd_demo(a, progress: Progress) -> int:
    _forecast_only(a)
    from .demo import demo
    return demo(Path(a.out), _train_options(a), progress=progress)


def cmd_deploy(a, progress: Progress) -> int:
    _forecast_only(a)
    from .demo import demo
    return demo(Path(a.out), _train_options(a), progress=progress, targets=a.device)


def cmd_search(a, progress: Progress) -> int:
    from .run import TrainOptions
    from .search import SearchOptions, front_table, search
    train = TrainOptions(**_shape_and_data(a), scheme=a.scheme)   # widths: the search's
    opts = SearchOptions(device=a.device, out=Path(a.out), trials=a.trials, storage=a.storage,
                         study=a.study, workers=a.workers, epochs=a.epochs,
                         float_epochs=a.float_epochs, max_cycles=a.max_cycles,
                         verify=not a.no_verify, verify_windows=a.verify_windows,
                         build=a.build, train=train)
    doc = search(opts, progress=progress, verbose_workers=progress.enabled)
    chosen = doc["chosen"]
    front = [d for n in doc["pareto"] for d in doc["trials"] if d["number"] == n]
    c = doc["counts"]
    what = ("validation RMSE" if a.task == "forecast" else
            f"validation {'error rate' if a.task == 'classify' else '1 - F1'} (column val RMSE)")
    print(f"{c['COMPLETE']} trained, {c['PRUNED']} pruned (do not fit), {c['FAIL']} failed; "
          f"Pareto front ({what} vs cycles on the {doc['device']}; * = chosen):")
    print(front_table(front, chosen["trial"]))
    run = chosen["run"]
    print(f"chosen: trial {chosen['trial']} ({chosen['rule']}) -> {run}")
    print(f"wrote {Path(a.out) / 'search.json'}, pareto.csv, pareto.png")
    target = "" if doc["device"] == "xc7s15" else f" --target {doc['device']}"
    ver = chosen.get("verify")
    if ver is not None:
        print(f"bit-exact check of the chosen design on {ver['windows']} windows: "
              f"{ver['mismatches']} mismatching windows")
    else:
        print(f"verify it with: intformer verify {run}{target}")
    if chosen.get("build") is None:
        print(f"build it with:  intformer build {run} --target {doc['device']}")
    return 0 if ver is None or ver["mismatches"] == 0 else 1


def cmd_accuracy(a, progress: Progress) -> int:
    from .accuracy import main as accuracy_main
    return accuracy_main(a, _train_options(a), progress=progress)


def cmd_bench(a, progress: Progress) -> int:
    from .bench import main as bench_main
    return bench_main(a.args[1:] if a.args[:1] == ["--"] else a.args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="intformer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name, help, example):
        p = sub.add_parser(name, help=help, description=f"{help}\n\nexample:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--quiet", action="store_true", help="no progress output")
        g.add_argument("--verbose", action="store_true", help="progress output even when piped")
        return p

    p = add("train", "train (float, then QAT), convert to the integer model, evaluate",
            "intformer train --out runs/w8 --bits 8")
    p.add_argument("--out", default="runs/train", help="run directory to create")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = add("build", "export Verilog/VHDL and synthesise for the XC7S15 (Yosys) and/or the iCE40 "
            "UP5K (Yosys + nextpnr + icepack); also writes a Vivado project script",
            "intformer build runs/w8 --target xc7s15 --target ice40up5k")
    p.add_argument("run", help="run directory made by `intformer train`")
    p.add_argument("--target", action="append", choices=["xc7s15", "ice40up5k"],
                   help="device (repeat for both; default: both)")
    p.add_argument("--check", action="store_true", help="exit 1 if the design does not fit")
    p.set_defaults(func=cmd_build)

    p = add("verify", "run the test windows through the integer model, Amaranth's simulator, "
            "the compiled Verilog (Verilator) and the VHDL (GHDL); compare bit for bit",
            "intformer verify runs/w8 --windows 500")
    p.add_argument("run", help="run directory made by `intformer train`")
    p.add_argument("--target", default="xc7s15", choices=["xc7s15", "ice40up5k"],
                   help="whose hardware configuration to verify (default xc7s15)")
    p.add_argument("--windows", type=int, default=None,
                   help="test windows for the compiled simulation (default: all)")
    p.add_argument("--amaranth-windows", type=int, default=2)
    p.add_argument("--ghdl-windows", type=int, default=1)
    p.set_defaults(func=cmd_verify)

    p = add("report", "write report.json and report.html for a run directory",
            "intformer report runs/w8")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=cmd_report)

    p = add("demo", "the main job on the default dataset: one float model, then for each device "
            "(XC7S15, UP5K) the widest design that fits, fine-tuned, verified bit for bit, "
            "synthesised (and placed and routed), with a report of one column per device",
            "intformer demo --out runs/demo")
    p.add_argument("--out", default="runs/demo", help="directory to create")
    _add_train_args(p)
    p.set_defaults(func=cmd_demo)

    p = add("deploy", "as demo, on your data (--csv or --dataset) and for the devices you name: "
            "one float model, per device the widest design that fits, fine-tuned, verified, built",
            "intformer deploy --out runs/mine --device ice40up5k --csv data.csv --time-column time "
            "--features a,b --target b")
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--device", action="append", choices=["xc7s15", "ice40up5k"], default=None,
                   help="a device to deploy to (repeat for several; default both)")
    _add_train_args(p)
    p.set_defaults(func=cmd_deploy)

    p = add("search", "design-space search (Optuna, two objectives): bit-widths, parallelism, "
            "multipliers and storage per layer group; non-fitting candidates are pruned by the "
            "resource estimator before training, fitting ones are QAT fine-tuned from one float "
            "model and scored by validation RMSE and exact cycles; writes search.json, "
            "pareto.csv, pareto.png and the chosen design as a run directory",
            "intformer search --device xc7s15 --out runs/search --trials 40")
    p.add_argument("--device", required=True, choices=["xc7s15", "ice40up5k"],
                   help="the FPGA the designs must fit")
    p.add_argument("--out", default="runs/search", help="output directory (default runs/search)")
    p.add_argument("--trials", type=int, default=30,
                   help="trials to run (in total over the workers; the first two of a new study "
                        "are the target preset at 8 and at 4 bits)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///OUT/search.db; any SQLAlchemy "
                        "database URL, e.g. postgresql+psycopg://user@host/db to share the study "
                        "between machines: README, 'Design-space search')")
    p.add_argument("--study", default=None, help="study name (default intformer-DEVICE)")
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes sharing the study (default 1)")
    p.add_argument("--epochs", type=int, default=3,
                   help="QAT fine-tuning epochs per candidate (default 3)")
    p.add_argument("--float-epochs", type=int, default=None,
                   help="maximum epochs of the shared float model (trained once per --out)")
    p.add_argument("--max-cycles", type=int, default=None,
                   help="choose the most accurate design with at most this many cycles "
                        "(default: the most accurate on the front)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not run the bit-exact verification of the chosen design")
    p.add_argument("--verify-windows", type=int, default=200,
                   help="test windows for the compiled simulation of the verification")
    p.add_argument("--build", action="store_true", help="also build the chosen design")
    _add_shape_args(p)
    p.add_argument("--scheme", choices=["adaptive", "symmetric", "asymmetric"], default="adaptive")
    p.add_argument("--seed", type=int, default=0)
    _add_data_args(p)
    p.set_defaults(func=cmd_search)

    p = add("accuracy", "benchmark: test RMSE of the float model and of the integer models at "
            "8, 6, 4 bits with 8-bit input and prediction (4io8) and 4 bits, over several seeds, "
            "against persistence and a linear model (a table and JSON); --task classify / anomaly: "
            "test accuracy / F1 at 8, 4io8 and 4 bits against their baseline",
            "intformer accuracy --seeds 3 --json runs/accuracy.json")
    _add_train_args(p)
    from .accuracy import add_arguments
    add_arguments(p)
    p.set_defaults(func=cmd_accuracy)

    p = add("bench", "benchmark: cycles per inference, µs, XC7S15 resources, UP5K Fmax and the "
            "speed-up over the published design, for several configurations (a table and JSON); "
            "options after `--` go to the benchmark (see `intformer bench -- --help`)",
            "intformer bench -- --json bench.json    (or: intformer bench -- --quick)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="benchmark options")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    progress = Progress(a.quiet, a.verbose, piped=a.command in ("demo", "deploy"))
    from model.data import DataError
    from model.intmodel import ModelFileError
    from .run import RunError
    from sim.tools import ToolError, ToolNotFound
    from .xilinx import DoesNotFit
    if getattr(a, "target", None) is None and a.command == "build":
        a.target = ["xc7s15", "ice40up5k"]
    try:
        return a.func(a, progress)
    except (DataError, ModelFileError, RunError, ValueError, FileNotFoundError,
            ToolNotFound, ToolError, DoesNotFit) as e:
        print(f"intformer {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"intformer {a.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
