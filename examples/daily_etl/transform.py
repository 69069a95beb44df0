"""Transform: total the raw amounts per customer into data/totals.csv."""

import csv
from collections import defaultdict

totals: dict[str, float] = defaultdict(float)
with open("data/raw.csv", newline="") as f:
    for row in csv.DictReader(f):
        totals[row["customer"]] += float(row["amount"])
with open("data/totals.csv", "w", newline="") as f:
    csv.writer(f).writerows([("customer", "total"), *sorted(totals.items())])
print(f"transformed into {len(totals)} customers")
