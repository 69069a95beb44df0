"""Extract: write a few raw rows to data/raw.csv (a stand-in for a real source)."""

import csv
from pathlib import Path

rows = [("2024-01-01", "alice", "12.50"), ("2024-01-01", "bob", "7.25"), ("2024-01-02", "alice", "3")]
Path("data").mkdir(exist_ok=True)
with open("data/raw.csv", "w", newline="") as f:
    csv.writer(f).writerows([("day", "customer", "amount"), *rows])
print(f"extracted {len(rows)} rows")
