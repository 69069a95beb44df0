"""A workflow written in Python: ``forge run examples/python_flow.py -p date=2024-02-01``, or
from code: ``python examples/python_flow.py``.

Task functions get workflow params and upstream outputs by parameter name and return their
outputs as a dict; a command task reads them back with ``${{ tasks.NAME.outputs.KEY }}``.
"""

from forge_core.flow import Workflow

wf = Workflow("python_etl", schedule="0 2 * * *", concurrency=2,
              params={"date": "2024-01-01"}, defaults={"timeout": "1m"})


@wf.task(retries=3, retry_delay=1, timeout=60)
def extract(date: str) -> dict[str, object]:
    rows = [{"day": date, "amount": a} for a in (12.5, 7.25, 3.0)]
    return {"rows": len(rows), "total": sum(r["amount"] for r in rows)}


@wf.task(depends_on=[extract])
def transform(extract: dict[str, object]) -> dict[str, object]:
    return {"rows": extract["rows"], "average": float(extract["total"]) / int(extract["rows"])}


wf.command("load", ["python3", "-c", "import sys; print('loading', sys.argv[1], 'rows')",
                    "${{ tasks.transform.outputs.rows }}"], depends_on=["transform"])


if __name__ == "__main__":  # run from code: state and logs under $FORGE_HOME, as forge run
    record = wf.run({"date": "2024-02-01"})
    for task in record.tasks:
        print(f"{task.name}: {task.state} {task.outputs}")
