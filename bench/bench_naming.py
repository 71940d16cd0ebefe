"""Naming speed (issue 20, point 1): kernels/s of `naming.match` per kernel size, against the floor
and against the previous implementation, and whether the names agree.

Per size: N planted kernels (`validation.planted_bank`, every family, SNR 2, random orientations,
centred and unit-normalised as `match` sees them), named with the built-in bank.
  kernels/s     N / the best of --repeats wall times of `match` (a warm call first builds the plan);
                the best CPU time of this process is printed beside every wall time
  floor         one float32 product of the same unit kernels with as many templates as the bank has
                template *objects* (its fixed rows plus one per steered set), and an argmax per row:
                what naming would cost if every template object were one column (the issue's floor)
  x floor       naming time / floor time
  previous      the implementation of commit --previous (its naming/matching.py and _steered.py, read
                with `git show` and run beside the current templates.py), same kernels, same timing
  agree         share of kernels with the same family and polarity and an orientation within 3 deg /
                share with the same template exactly (the previous code searched every template,
                the current one reads orientation in closed form: `naming._closed`)

`--accuracy` adds the naming part of bench_validation (family, polarity, orientation per size and
SNR, each kernel named by its own best match, seeds averaged) for the current and the previous code.

Usage: python bench/bench_naming.py [--n 50000] [--sizes 3x3 5x5 7x7] [--repeats 3] [--previous 766a534]
       [--accuracy [--no-speed]] [--snr 1 2 3 5 8] [--seeds 0 1] [--per-class 80]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import types
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from kernel_catalog.analysis.naming import make_templates, match  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402
from kernel_catalog.analysis.validation import score_names  # noqa: E402
from kernel_catalog.analysis.validation.planted import planted_bank, planted_classes  # noqa: E402

PREVIOUS = "766a534"     # the last commit before the closed-form steered search


def previous_match(commit: str):
    """`match` of an older commit: its matching.py and _steered.py, loaded as private modules."""
    def show(name: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:catalog/analysis/naming/{name}.py"], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout
    steered = types.ModuleType("_previous_naming_steered")
    sys.modules[steered.__name__] = steered
    exec(compile(show("_steered"), f"{commit}:_steered.py", "exec"), steered.__dict__)
    matching = types.ModuleType("_previous_naming_matching")
    sys.modules[matching.__name__] = matching
    src = show("matching").replace("kernel_catalog.analysis.naming._steered", steered.__name__)
    exec(compile(src, f"{commit}:matching.py", "exec"), matching.__dict__)
    return matching.match


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_time(f, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds, each the best of `repeats` calls: on a shared machine the CPU time of this
    process is the steadier figure (it still counts both BLAS threads of a product)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def floor_time(x: np.ndarray, columns: int, repeats: int) -> float:
    """One float32 product with `columns` unit templates and an argmax per row."""
    t = np.random.default_rng(0).standard_normal((columns, x.shape[1])).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    u = x.astype(np.float32)
    return best_time(lambda: (u @ t.T).argmax(axis=1), repeats)


def agreement(a, b) -> tuple[float, float]:
    """(share of kernels with the same family and polarity and an orientation within 3 deg, share
    with the same template exactly)."""
    same = (a.family == b.family) & (a.polarity == b.polarity)
    d = np.abs(np.nan_to_num(a.orientation) - np.nan_to_num(b.orientation))
    period = np.where(a.family == "deriv1", 360.0, 180.0)
    d = np.minimum(d % period, period - d % period)
    same &= (np.isnan(a.orientation) == np.isnan(b.orientation)) & (d <= 3.0)
    return float(same.mean()), float((a.template == b.template).mean())


def kernels(kh: int, kw: int, n: int, snr: float = 2.0, seed: int = 0) -> np.ndarray:
    per = -(-n // len(planted_classes(kh, kw)))
    return preprocess(planted_bank(per, kh, kw, snr=snr, seed=seed).kernels)[0][:n].astype(np.float64)


def speed(args, previous) -> None:
    print("| size | kernels | templates (fixed + steered sets = objects) | naming s wall / CPU | kernels/s (wall) "
          "| floor s wall / CPU | x floor (wall / CPU) | previous s wall / CPU | previous kernels/s (wall) "
          "| speed-up (wall / CPU) | agree (name / template) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kh, kw in args.sizes:
        x = kernels(kh, kw, args.n)
        bank = make_templates(kh, kw)
        objects = len(bank.families) + len(bank.steered)
        match(x[:10], bank)
        now = best_time(lambda x=x, bank=bank: match(x, bank), args.repeats)
        floor = floor_time(x, objects, args.repeats)
        cols = f"| {kh}x{kw} | {len(x)} | {len(bank.families)} + {len(bank.steered)} = {objects} | " \
               f"{now[0]:.3f} / {now[1]:.3f} | {len(x) / now[0]:,.0f} | {floor[0]:.4f} / {floor[1]:.4f} | " \
               f"{now[0] / floor[0]:.1f} / {now[1] / floor[1]:.1f} |"
        if previous is not None:
            previous(x[:10], bank)
            before = best_time(lambda x=x, bank=bank: previous(x, bank), args.repeats)
            cols += f" {before[0]:.3f} / {before[1]:.3f} | {len(x) / before[0]:,.0f} | " \
                    f"{before[0] / now[0]:.1f} / {before[1] / now[1]:.1f} | " \
                    "{:.4f} / {:.4f} |".format(*agreement(match(x, bank), previous(x, bank)))
        else:
            cols += " - | - | - | - |"
        print(cols + f" {os.getloadavg()[0]:.1f} |", flush=True)


def accuracy(args, previous) -> None:
    print("\n| size | SNR | family | polarity | orientation median (deg) | within 22.5 deg "
          "| previous family | previous polarity | previous median | previous within 22.5 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fields = ("family_acc", "polarity_acc", "orientation_median", "orientation_22")
    for kh, kw in args.sizes:
        bank = make_templates(kh, kw)
        for snr in args.snr:
            runs = {"now": [], "previous": []}
            for seed in args.seeds:
                planted = planted_bank(args.per_class, kh, kw, snr=snr, seed=seed)
                x = preprocess(planted.kernels)[0]
                for name, f in (("now", match), ("previous", previous)):
                    if f is not None:
                        m = f(x, bank)
                        runs[name].append(score_names(planted, m.family, m.polarity, m.orientation))
            mean = {k: {f: float(np.nanmean([r[f] for r in v])) for f in fields} for k, v in runs.items() if v}
            row = f"| {kh}x{kw} | {snr:g} | " + " | ".join(
                f"{mean['now'][f]:.1f}" if f == "orientation_median" else f"{mean['now'][f]:.4f}" for f in fields)
            if "previous" in mean:
                row += " | " + " | ".join(f"{mean['previous'][f]:.1f}" if f == "orientation_median"
                                          else f"{mean['previous'][f]:.4f}" for f in fields)
            print(row + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--sizes", nargs="+", default=["3x3", "5x5", "7x7"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--previous", default=PREVIOUS, help="commit of the implementation to compare with ('' for none)")
    ap.add_argument("--accuracy", action="store_true", help="also the naming part of bench_validation")
    ap.add_argument("--no-speed", action="store_true", help="only the accuracy table")
    ap.add_argument("--snr", type=float, nargs="+", default=[1, 2, 3, 5, 8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--per-class", type=int, default=80)
    args = ap.parse_args()
    args.sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    previous = previous_match(args.previous) if args.previous else None
    print(f"# bench_naming {date.today()} on {platform.node()} ({cpu_model()}, nproc {os.cpu_count()}), "
          f"numpy {np.__version__}, {args.n} planted kernels per size (SNR 2), best of {args.repeats}, "
          f"previous = {args.previous or 'none'}")
    if not args.no_speed:
        speed(args, previous)
    if args.accuracy:
        accuracy(args, previous)


if __name__ == "__main__":
    main()
