"""Load: put the totals into a SQLite database, data/warehouse.db."""

import csv
import sqlite3

with open("data/totals.csv", newline="") as f:
    rows = [(r["customer"], float(r["total"])) for r in csv.DictReader(f)]
with sqlite3.connect("data/warehouse.db") as db:
    db.execute("CREATE TABLE IF NOT EXISTS totals (customer TEXT PRIMARY KEY, total REAL)")
    db.executemany("INSERT OR REPLACE INTO totals VALUES (?, ?)", rows)
print(f"loaded {len(rows)} rows")
