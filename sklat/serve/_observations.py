"""The observations a service receives, appended durably to a results folder.

One JSON Lines file, ``<folder>/served/requests.jsonl``, in the results
format (:func:`sklat.io.load_results` and ``sklat train --results_dir
<folder>`` read it). A call's rows are written in one write, flushed and
``fsync``-ed before the call is answered: what was acknowledged survives a
crash of the process or the machine. A write cut short by a crash (a last
line without its newline) was never acknowledged; opening the log drops it.
"""

import json
import os
import threading
from pathlib import Path

DATASET = "served"
FILE_NAME = "requests.jsonl"


class ObservationLog:
    """Append-only, crash-safe log of observed requests.

    Parameters
    ----------
    folder : path
        The results folder (created if missing).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / DATASET / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.count = _repair(self.path)

    def append(self, records):
        """Write ``records`` (dicts of JSON values) durably; the number of
        observations logged so far."""
        lines = (json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in records)
        data = "".join(lines).encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.count += len(records)
            return self.count


def _repair(path):
    """Drop a torn last line (a write the crash cut short, never
    acknowledged); the number of observations kept."""
    if not path.exists():
        # The folder entry of a new file is made durable with its first write.
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return data[:end].count(b"\n")
