"""piko.observability: metrics, logging and process figures.

Rules: the metrics registry and its text exposition are pure (no I/O at scrape time beyond
/proc for process_* figures); a collector that raises drops only its own families; log lines
never carry a secret (DSN passwords and tokens are masked) and a run's lines carry job and run id.
"""
