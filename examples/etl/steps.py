"""The steps of examples/etl: ``python3 steps.py STEP ARGS...``; outputs go to $FORGE_OUTPUT."""

import csv
import json
import os
import random
import sqlite3
import sys
from pathlib import Path

DATA = Path("data")


def output(**values: object) -> None:
    """Hand values to downstream tasks (key=value lines in the file Forge names)."""
    target = os.environ.get("FORGE_OUTPUT")
    if target:
        with open(target, "a") as f:
            f.writelines(f"{k}={v}\n" for k, v in values.items())
    print(json.dumps(values, default=str))


def extract(date: str, region: str) -> None:
    rng = random.Random(f"{date}-{region}")
    DATA.mkdir(exist_ok=True)
    path = DATA / f"orders-{region}-{date}.csv"
    rows = [(i, rng.choice(["alice", "bob", "carol"]), round(rng.uniform(1, 50), 2))
            for i in range(20)]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("id", "customer", "amount"), *rows])
    output(path=path, rows=len(rows))


def flaky(path: str) -> None:
    marker = Path(path + ".tried")
    if not marker.exists():
        marker.touch()
        sys.exit("enrichment service unavailable (first attempt fails on purpose)")
    marker.unlink()
    output(enriched=True)


def transform(path: str) -> None:
    totals: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            totals[row["customer"]] = totals.get(row["customer"], 0) + float(row["amount"])
    digits = int(os.environ.get("ROUND_TO", "2"))
    out = Path(path).with_suffix(".totals.json")
    out.write_text(json.dumps({k: round(v, digits) for k, v in sorted(totals.items())}))
    output(path=out, customers=len(totals))


def load(path: str) -> None:
    totals = json.loads(Path(path).read_text())
    with sqlite3.connect(DATA / "warehouse.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS totals (customer TEXT PRIMARY KEY, total REAL)")
        db.executemany("INSERT OR REPLACE INTO totals VALUES (?, ?)", totals.items())
    output(loaded=len(totals))


if __name__ == "__main__":
    step, *args = sys.argv[1:]
    {"extract": extract, "flaky": flaky, "transform": transform, "load": load}[step](*args)
