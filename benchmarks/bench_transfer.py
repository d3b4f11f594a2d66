"""Transfer benchmark: a small site learning from a large one, the tabular ways first (issue 38).

Usage::

    python benchmarks/bench_transfer.py [--sites B C] [--sizes 100 250 500] [--seeds 0 1 2]
        [--site-a 50000] [--test-subjects 2000] [--boot 1000] [--cohort test|dev]
        [--pretrain tte tte+value clinicalbert:tte] [--epochs 2]

World "history" as three health systems record it (``ehrprog.datasets.sites``, docs/simulator.md):
site A (large, ``--site-a`` people, seed 7) and the small sites B and C (a European and a US
community system: other case mix, testing, units, coding and 10-30% of diagnoses under local
codes; ``--sites A`` takes small cohorts from site A itself, other people of the same system: the
transfer without site differences). For each small site, size N (labeled people of its CKD
cohort, drawn from a population of the training seed) and seed, these are fitted and scored on
ONE test cohort of the site (``--test-subjects`` labeled people of seed 99; seed 98 with
``--cohort dev``), the same test points for every method:

* **own booster**: the package's best baseline (gradient-boosted Cox on the clinical table and
  windowed code counts, tuned over subject folds) fitted on the N people alone;
* **A's booster as it is**: the same model fitted once on site A's CKD cohort, applied unchanged;
* **own booster + A's margin**: the own booster with site A's predicted log risk as one more
  input column (stacking: it learns how far to trust A);
* with ``--eb``, **own booster + EB eGFR trend (A's prior)**: the own booster with each point's
  empirical-Bayes eGFR level and slope, shrunk toward site A's population (benchmarks/eb_trend.py);
* **headroom**: the own booster given the simulator's true latent state (slope, UACR, phenotypes);
* **oracle**: the simulator's true risk;

and with ``--pretrain [BACKBONE:]OBJECTIVE...`` the pre-trained paths: site A's whole population
(``--site-a`` people, CKD or not) is saved with ``ehrprog build --population`` and the backbone
(``default`` unless named; ``clinicalbert`` embeds each code by its description, so the small
site's local codes, which site A never saw, start from their text) is pre-trained on it from disk
(``ehrprog pretrain``, one process whose peak RSS and time are printed; checkpoints cached under
benchmarks/_data/transfer/), then at the small site:

* **estimator from scratch**: ``VisitProgressionEstimator`` (the demo's settings, target
  progression): its tabular part plus a history offset learned on the N people;
* **estimator from A's checkpoint (BACKBONE, OBJECTIVE)**: the same, its history network starting
  from the checkpoint (``backbone__checkpoint``; the heads also read the backbone's output).

Printed per site and size: each method's C-index (mean and sd over seeds) and the difference of
each transfer path from the own booster with a 95% two-level bootstrap interval (test subjects
resampled, the same resamples for every method; training seeds resampled), and each path's share
of the headroom. The pre-trained history paths (a checkpoint of site A fine-tuned at the small
site) are to be measured against these.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import sparse

import ehrprog as ep
from ehrprog.datasets import oracle_risk, simulated_truth
from ehrprog.metrics import harrell_c, interval, paired_bootstrap_c
from ehrprog.models.baselines import WindowedCountsBoostedCox

CACHE = Path(os.environ.get("EHRPROG_BENCH_CACHE", "/tmp/ehrprog_transfer"))
OWN, AS_IS, STACKED, HEADROOM, ORACLE = (
    "own booster",
    "A's booster as it is",
    "own booster + A's margin",
    "headroom: own booster + true latent state",
    "oracle",
)
PATHS = (AS_IS, STACKED)


def site_cohort(site: str, people: int, seed: int) -> ep.tasks.Cohort:
    """The CKD cohort of ``people`` simulated people of ``site`` (the OMOP folder cached on disk)."""
    root = CACHE / f"site{site}_{people}_{seed}"
    if not root.exists():
        ep.datasets.simulate_ckd(people, seed, root, world="history", site=site)
    return ep.tasks.CKDProgression().build(ep.read_omop(root))


def labeled(site: str, n: int, seed: int) -> tuple[ep.tasks.Cohort, np.ndarray, int]:
    """``n`` labeled people of ``site``'s CKD cohort (seed ``seed``): the cohort, its rows kept, and
    the population simulated (benchmarks/bench_quality.py's draw)."""
    from bench_quality import labeled as draw

    return draw("history", n, seed, build=lambda people, s: site_cohort(site, people, s))


EB = "own booster + EB eGFR trend (A's prior)"


class WithColumns(WindowedCountsBoostedCox):
    """The own booster with more columns per point (``extra(X) -> [n, k]``)."""

    def __init__(self, extra, random_state: int = 0) -> None:
        super().__init__(random_state=random_state)
        self.extra = extra

    def _fit_features(self, X):
        return sparse.hstack([super()._fit_features(X), sparse.csr_matrix(self.extra(X))], format="csr")

    def _features(self, X):
        return sparse.hstack([super()._features(X), sparse.csr_matrix(self.extra(X))], format="csr")


DATA = Path(__file__).resolve().parent / "_data" / "transfer"
SCRATCH = "estimator from scratch"


def from_checkpoint(spec: str) -> str:
    backbone, _, objective = spec.rpartition(":")
    return f"estimator from A's checkpoint ({backbone or 'default'}, {objective})"


def _run(command: list[str]) -> tuple[float, int]:
    """Run ``ehrprog COMMAND`` in its own process: (seconds, its peak RSS in MiB)."""
    import subprocess
    import sys

    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report this process's peak
    runner = (
        "import re, sys; from ehrprog.cli import main; code = main(sys.argv[1:]); "
        "kib = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        "print(f'peak RSS {kib // 1024} MiB', file=sys.stderr); sys.exit(code)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", runner, *command], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ehrprog {' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    peak = int(done.stderr.rsplit("peak RSS ", 1)[1].split()[0])
    return time.perf_counter() - started, peak


def checkpoints(objectives: list[str], people: int, epochs: int) -> dict[str, tuple[str, Path]]:
    """Site A's population saved to disk and a backbone pre-trained on it per ``[BACKBONE:]OBJECTIVE``."""
    population = DATA / f"siteA_{people}_population"
    if not population.exists():
        source = str(CACHE / f"siteA_{people}_7")
        seconds, peak = _run(["build", "--data", source, "--out", str(population), "--population", "--quiet"])
        print(f"site A's population saved for pre-training in {seconds:.0f} s (peak RSS {peak:,} MiB)")
    found = {}
    for spec in objectives:
        backbone, _, objective = spec.rpartition(":")
        backbone = backbone or "default"
        folder = DATA / f"siteA_{people}_{backbone}_{objective}_{epochs}ep"
        if not folder.exists():
            command = ["pretrain", "--backbone", backbone, "--data", str(population), "--out", str(folder)]
            command += ["--objective", objective, "--epochs", str(epochs), "--hidden", "32", "--seed", "0"]
            seconds, peak = _run(command)
            print(
                f"pre-trained {backbone} ({objective}, epochs: {epochs}) on site A's {people:,} people "
                f"from disk: {seconds:.0f} s, {people * epochs / seconds:,.0f} people/s, peak RSS {peak:,} MiB",
                flush=True,
            )
        found[spec] = (backbone, folder)
    return found


def estimator_risk(X_tr, y_tr, X_te, seed: int, checkpoint: tuple[str, Path] | None) -> tuple[np.ndarray, str]:
    """Test risks of the estimator (the demo's settings, target progression), from scratch or from a
    checkpoint, and what its history did on validation (kept or dropped, and its gain)."""
    from ehrprog.evaluation.heldout import DEMO_MODEL_PARAMS

    params = {**DEMO_MODEL_PARAMS, "target": "progression", "random_state": seed}
    if checkpoint is not None:
        params["backbone"], params["backbone__checkpoint"] = checkpoint[0], str(checkpoint[1])
    model = ep.VisitProgressionEstimator().set_params(**params).fit(X_tr, y_tr)
    gain = model.history_trial_gain_ or 0.0
    return model.predict_risk(X_te), f"{'kept' if model.history_kept_ else 'dropped'} ({gain:+.4f})"


def headroom(X_tr, y_tr, X_te, truth_tr, truth_te, seed: int) -> np.ndarray:
    """The own booster given the true latent state (benchmarks/bench_quality.py's headroom row)."""
    from bench_quality import headroom_risk

    return headroom_risk(X_tr, y_tr, X_te, truth_tr, truth_te, "history", seed)


def compare(runs: list[dict], test: dict, boot: int) -> list[str]:
    """Each method's C (mean, sd over seeds) and each transfer path minus the own booster."""
    event, time_, groups = test["event"], test["time"], test["groups"]
    names = list(runs[0]["risks"])
    c = {n: [harrell_c(event, time_, run["risks"][n]) for run in runs] for n in names}
    lines = [f"    {name:44s} {np.mean(c[name]):.4f} (sd {np.std(c[name]):.4f})" for name in names]
    room = np.mean(c[HEADROOM]) - np.mean(c[OWN])
    pretrained = [n for n in names if n.startswith("estimator from A")]
    pairs = [(path, OWN) for path in PATHS] + ([(EB, OWN)] if EB in names else [])
    if SCRATCH in names:
        pairs += [(SCRATCH, OWN)] + [(n, SCRATCH) for n in pretrained] + [(n, AS_IS) for n in pretrained]
    for path, base in pairs:
        draws = []
        for run in runs:
            boots = paired_bootstrap_c(event, time_, {"a": run["risks"][path], "b": run["risks"][base]}, groups, boot)
            draws.append(boots["a"] - boots["b"])
        draws = np.array(draws)
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(draws), size=(draws.shape[1], len(draws)))
        low, high = interval(draws[picks, np.arange(draws.shape[1])[:, None]].mean(axis=1))
        diff = np.mean(c[path]) - np.mean(c[base])
        verdict = "above zero" if low > 0 else ("below zero" if high < 0 else "inside the noise")
        share = f"; {diff / room:+.0%} of the headroom" if room > 0 else ""
        lines.append(f"    {path} - {base}: {diff:+.4f} C, 95% [{low:+.4f}, {high:+.4f}] ({verdict}{share})")
    gap = np.mean(c[ORACLE]) - np.mean(c[OWN])
    lines.append(f"    headroom over the own booster {room:+.4f}; oracle - own booster {gap:+.4f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", nargs="+", default=["B", "C"], choices=["A", "B", "C"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 250, 500])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--site-a", type=int, default=50_000, help="people simulated at site A")
    parser.add_argument("--test-subjects", type=int, default=2000)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--cohort", choices=["test", "dev"], default="test")
    parser.add_argument(
        "--pretrain",
        nargs="*",
        default=[],
        help="[BACKBONE:]OBJECTIVE per checkpoint: tte, tte+value, clinicalbert:tte",
    )
    parser.add_argument("--epochs", type=int, default=2, help="pre-training epochs")
    parser.add_argument("--eb", action="store_true", help="add the empirical-Bayes eGFR trend row")
    parser.add_argument(
        "--min-validation-subjects",
        type=int,
        default=None,
        help="override ehrprog.models.history_fit.MIN_VALIDATION_SUBJECTS (to measure the guard itself)",
    )
    args = parser.parse_args()
    test_seed, seed_offset = (99, 0) if args.cohort == "test" else (98, 100)
    if args.min_validation_subjects is not None:
        import ehrprog.models.history_fit as history_fit

        history_fit.MIN_VALIDATION_SUBJECTS = args.min_validation_subjects
        print(f"the history is judged on at least {args.min_validation_subjects} validation subjects")
    print(
        f"bench_transfer: ehrprog {ep.__version__}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run {time.strftime('%Y-%m-%d %H:%M')}; {args.cohort} cohorts"
    )
    started = time.perf_counter()
    site_a = site_cohort("A", args.site_a, 7)
    prior = WindowedCountsBoostedCox(random_state=0).fit(site_a.X, site_a.y)
    trend = None
    if args.eb:
        from eb_trend import EBTrend

        trend = EBTrend().fit(site_a.X)
        print(f"EB eGFR trend prior from site A: mean level {trend.mu_[0]:.1f}, slope {trend.mu_[1]:+.2f} a year")
    print(
        f"site A: {args.site_a:,} people, CKD cohort of {len(np.unique(site_a.groups)):,} subjects "
        f"({len(site_a.X):,} points); its booster fitted in {time.perf_counter() - started:.0f} s"
    )
    pretrained = checkpoints(args.pretrain, args.site_a, args.epochs) if args.pretrain else {}
    for site in args.sites:
        cohort_te, rows_te, people_te = labeled(site, args.test_subjects, test_seed)
        X_te, y_te = cohort_te.X[rows_te], cohort_te.y[rows_te]
        truth_te = simulated_truth(people_te, test_seed, "history", site=site)
        test = {
            "event": y_te["event"].to_numpy().astype(bool),
            "time": y_te["time_to_event_days"].to_numpy(),
            "groups": cohort_te.groups[rows_te],
        }
        oracle = oracle_risk(X_te.points, truth_te)
        as_is = prior.predict(X_te)
        print(
            f"\nsite {site}: test cohort {args.test_subjects:,} labeled people of {people_te:,} (seed {test_seed}), "
            f"{len(X_te):,} points, {int(test['event'].sum()):,} progressions"
        )
        for n in args.sizes:
            runs = []
            for seed in args.seeds:
                t0 = time.perf_counter()
                cohort, rows, people = labeled(site, n, seed + seed_offset)
                X_tr, y_tr = cohort.X[rows], cohort.y[rows]
                truth_tr = simulated_truth(people, seed + seed_offset, "history", site=site)
                own = WindowedCountsBoostedCox(random_state=seed).fit(X_tr, y_tr).predict(X_te)
                margin = WithColumns(lambda X: prior.predict(X).reshape(-1, 1), random_state=seed)  # stacking
                stacked = margin.fit(X_tr, y_tr).predict(X_te)
                room = headroom(X_tr, y_tr, X_te, truth_tr, truth_te, seed)
                risks = {OWN: own, AS_IS: as_is, STACKED: stacked, HEADROOM: room, ORACLE: oracle}
                if trend is not None:
                    risks[EB] = WithColumns(trend.transform, random_state=seed).fit(X_tr, y_tr).predict(X_te)
                history = []
                if pretrained:
                    risks[SCRATCH], kept = estimator_risk(X_tr, y_tr, X_te, seed, None)
                    history.append(f"from scratch {kept}")
                    for spec, checkpoint in pretrained.items():
                        risks[from_checkpoint(spec)], kept = estimator_risk(X_tr, y_tr, X_te, seed, checkpoint)
                        history.append(f"{spec} {kept}")
                runs.append({"risks": risks})
                histories = f"; history {', '.join(history)}" if history else ""
                seconds = time.perf_counter() - t0
                print(f"  [N={n} seed {seed}: {len(X_tr):,} training points; {seconds:.0f} s{histories}]", flush=True)
            print(f"  site {site}, N={n} labeled people, {len(args.seeds)} seeds:")
            print("\n".join(compare(runs, test, args.boot)), flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
