"""The smallest piko app: one job every 10 seconds, each run recorded in ./piko.db.

    python -m piko run examples/hello.py        # Ctrl+C stops it
    python -m piko runs hello_job               # in a second terminal: what ran, when, how long
    python -m piko schedule hello_job --interval '{"seconds": 3}'   # applied while it runs

The schedule in the code is only a default: it is written to the scheduled_job table on the
first start, and from then on the row decides. With piko installed (`pip install .`),
`python examples/hello.py` runs it too.

While it runs, http://127.0.0.1:8000/ shows its runs; with PIKO_HTTP_ADMIN_TOKEN set (16+
characters) the page's buttons can also run, pause, resume, cancel and re-run.
"""

from piko import PikoApp

app = PikoApp(name="demo")


@app.job(job_id="hello_job", interval={"seconds": 10})
async def hello(ctx, scheduled_time):
    ctx["logger"].info("hello from run %s, scheduled for %s", ctx["run_id"], scheduled_time.isoformat())


if __name__ == "__main__":
    app.run()
