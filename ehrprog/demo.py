"""``make demo``: simulate a CKD cohort, read it back, group visits, label stages, summarise.

Run as ``python -m ehrprog.demo [--subjects N] [--seed S] [--out DIR]``. Writes the simulated
OMOP extract, the cohort's labels (MEDS label schema, Parquet) and a text report under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ehrprog as ep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text)
        lines.append(text)

    t0 = time.perf_counter()
    omop = ep.datasets.simulate_ckd(args.subjects, args.seed, args.out / "omop")
    t1 = time.perf_counter()
    events = ep.read_omop(omop)
    t2 = time.perf_counter()
    visits = ep.group_visits(events, "same_day")
    t3 = time.perf_counter()
    cohort = ep.tasks.CKDProgression(visits="same_day").build(events)
    t4 = time.perf_counter()
    n_events = events.report.rows_kept
    say(f"ehrprog {ep.__version__} demo: simulated CKD cohort, {args.subjects:,} subjects, seed {args.seed}")
    say(f"simulate + write OMOP Parquet   {t1 - t0:6.2f} s")
    say(f"read OMOP ({n_events:,} events)  {t2 - t1:6.2f} s")
    say(f"group visits ({visits.n_visits:,} visits) {t3 - t2:6.2f} s")
    say(f"stage + build cohort           {t4 - t3:6.2f} s")
    say("")
    say("ingest report:")
    say(str(events.report))
    say("")
    say("cohort:")
    say(cohort.summary())
    cohort.labels.write_parquet(args.out / "labels.parquet")
    (args.out / "report.txt").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.out / 'report.txt'} and {args.out / 'labels.parquet'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
