"""Settings from a file: examples/piko.toml names the store, the time zone, ports and more.

The code names neither a store nor a zone: the cron schedule below runs in the `timezone`
of piko.toml (Europe/Berlin), which also puts the data in ./office.db and gives running
jobs 20 s to finish on shutdown. Pass the file with --settings or PIKO_SETTINGS_PATH (run
from examples/, piko would find piko.toml by itself):

    python -m piko jobs examples/piko_toml.py --settings examples/piko.toml   # next fires, Berlin time
    python -m piko run examples/piko_toml.py --settings examples/piko.toml

PIKO_ENV=production in front of the second command applies the [production] section over
[default]. The job fires on weekdays every 15 minutes from 08:00 to 17:45 Berlin time; to
see it run now, give it a shorter schedule while it runs (the row in the database wins over
the code):

    python -m piko schedule office_digest --interval '{"seconds": 10}' --settings examples/piko.toml
"""

from __future__ import annotations

from piko import PikoApp

app = PikoApp(name="office")


@app.job(job_id="office_digest", cron="*/15 8-17 * * mon-fri")
async def office_digest(ctx, scheduled_time):
    # scheduled_time is in the schedule's zone: the settings' timezone, as this job's row names none
    ctx["logger"].info("office digest for %s", scheduled_time.strftime("%a %d %b %H:%M %Z"))
