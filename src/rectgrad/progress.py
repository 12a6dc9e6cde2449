"""Progress bars for long work: tqdm, redrawn live on a terminal or in a notebook, and at most every
``LOG_INTERVAL`` seconds when stderr goes to a file or a pipe, where each redraw would be one more line of log."""
from __future__ import annotations

import sys

LOG_INTERVAL = 30.0


def progress_bar(total: int, desc: str, enabled: bool = True, *, unit: str = "item", initial: int = 0,
                 leave: bool = True):
    """A tqdm bar over ``total`` units (``initial`` of them done), or ``None`` when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    live = sys.stderr.isatty() or "notebook" in tqdm.__module__
    intervals = {} if live else {"mininterval": LOG_INTERVAL, "maxinterval": 2 * LOG_INTERVAL}
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave, **intervals)
