#!/usr/bin/env python3
"""Start-up cost of the CLI: ``amalia-edge --help``, ``doctor`` and ``doctor --json`` in fresh
processes, against ``python -c pass`` measured in the same run.

Target (issue 4): ``--help`` and ``doctor`` return in under 0.5 s. Wall time on a shared
machine moves with other load, so each command also gets its CPU time (user + sys of the
child, from ``resource.getrusage(RUSAGE_CHILDREN)`` deltas), which load disturbs less, and
both are also printed minus the baseline: what amalia-edge itself adds. Commands run in
interleaved rounds (baseline, --help, doctor, doctor --json, baseline, ...) so drift hits all
equally; medians of ``--runs`` rounds after one untimed warm-up round.

Bytecode: a development checkout run with ``PYTHONDONTWRITEBYTECODE=1`` recompiles every
module on every start, which an installed package (``pip`` writes ``.pyc`` files) never does.
By default the children get ``PYTHONPYCACHEPREFIX`` pointing at a temporary directory (and
``PYTHONDONTWRITEBYTECODE`` removed), so the warm-up round compiles once and the timed rounds
measure an installed-like start without writing ``__pycache__`` into the tree;
``--no-bytecode-cache`` measures the recompiling start instead.

Usage::

    python3 benchmarks/startup.py [--runs 15] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5  # issue 4: `--help` and `doctor` under half a second

COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", ["-c", "pass"]),
    ("amalia-edge --help", ["-m", "amalia_edge", "--help"]),
    ("amalia-edge doctor", ["-m", "amalia_edge", "doctor"]),
    ("amalia-edge doctor --json", ["-m", "amalia_edge", "doctor", "--json"]),
)


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_once(args: list[str], env: dict[str, str], repo: Path = REPO) -> tuple[float, float]:
    """(wall s, CPU s) of one fresh ``python3 ARGS`` process; its exit status is not judged
    (doctor exits 1 when a check fails) but it must not crash."""
    cpu0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall, cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()}")
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed rounds (15)")
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="let every start recompile (as PYTHONDONTWRITEBYTECODE=1 does)",
    )
    ap.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also time another checkout (e.g. a `git archive` of an older commit), same rounds",
    )
    opts = ap.parse_args()
    trees = [("", REPO)] + ([(" [compare]", opts.compare.resolve())] if opts.compare else [])
    commands = [(n, a) for n, a in COMMANDS[:1]] + [
        (name + tag, args) for tag, _ in trees for name, args in COMMANDS[1:]
    ]
    tree_of = {name + tag: tree for tag, tree in trees for name, _ in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="amalia-startup-pyc-") as pyc:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # each command runs from its tree's root (python -m)
        if opts.no_bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = pyc
        for name, args in commands:  # warm-up: page cache, and .pyc files when cached
            run_once(args, env, tree_of.get(name, REPO))
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in commands}
        for _ in range(opts.runs):
            for name, args in commands:
                samples[name].append(run_once(args, env, tree_of.get(name, REPO)))
    med = {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for name, s in samples.items()
    }
    base_wall, base_cpu = med[COMMANDS[0][0]]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}, "
        f"{opts.runs} rounds, bytecode {'recompiled' if opts.no_bytecode_cache else 'cached'}"
    )
    print(
        f"{'command':<38}{'wall s':>9}{'CPU s':>9}{'wall-base':>11}{'CPU-base':>10}"
        f"  target < {TARGET_S} s"
    )
    for name, (wall, cpu) in med.items():
        verdict = ""
        if name != COMMANDS[0][0]:
            ok = {True: "ok", False: "over"}
            verdict = f"wall {ok[wall < TARGET_S]}, CPU {ok[cpu < TARGET_S]}"
        print(
            f"{name:<38}{wall:>9.3f}{cpu:>9.3f}{wall - base_wall:>11.3f}{cpu - base_cpu:>10.3f}"
            f"  {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
