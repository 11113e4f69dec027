"""The app: the one place that wires concrete parts together.

facade.py      PikoApp: registration, settings, start/stop, manual runs (what users call)
live.py        LiveState: what the kernel, the runner and the ops routes ask while it runs
console.py     LiveConsole: what the status page reads and the actions it takes, over LiveState
components.py  builders of the parts (store, ops HTTP, leader, writer, CPU pool) from settings
process.py     the blocking main loop: signals, uvloop, GC tuning, the CPU-worker guard
Imports go one way: facade -> components -> console -> live; process imports none of them. The kernel
side (piko.core) never imports this package.
"""

from piko.app.facade import PikoApp

__all__ = ["PikoApp"]
