"""The observations a service receives, appended durably to a results folder.

One JSON Lines file, ``<folder>/served/requests.jsonl``, in the results
format (:func:`sklat.io.load_results` and ``sklat train --results_dir
<folder>`` read it). A call's rows are written in one write, flushed and
``fsync``-ed before the call is answered: what was acknowledged survives a
crash of the process or the machine. A write cut short by a crash (a last
line without its newline) was never acknowledged; opening the log drops it.

The update process reads only the log's last lines (:func:`last_lines`): an
update costs its window, however long the service has run.
"""

import json
import os
import threading
from pathlib import Path

DATASET = "served"
FILE_NAME = "requests.jsonl"
# Bytes read at a time from the end of the log.
_TAIL_BLOCK = 1 << 16


def log_path(folder):
    """The log file of the observations folder ``folder``."""
    return Path(folder) / DATASET / FILE_NAME


class ObservationLog:
    """Append-only, crash-safe log of observed requests.

    Parameters
    ----------
    folder : path
        The results folder (created if missing).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = log_path(folder)
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
    acknowledged); the number of observations kept. Reads the log in
    blocks: the memory used does not grow with its size."""
    if not path.exists():
        # The folder entry of a new file is made durable with its first write.
        return 0
    with open(path, "rb+") as f:
        end = _after_last_newline(f)
        if end != f.seek(0, os.SEEK_END):
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
        f.seek(0)
        return sum(block.count(b"\n") for block in iter(lambda: f.read(_TAIL_BLOCK), b""))


def _after_last_newline(f):
    """The offset just past the last newline of the open file ``f`` (0 if
    it has none)."""
    for position, block in _blocks_from_end(f):
        found = block.rfind(b"\n")
        if found >= 0:
            return position + found + 1
    return 0


def _blocks_from_end(f):
    """``(offset, bytes)`` of the blocks of the open file ``f``, the last
    block first."""
    position = f.seek(0, os.SEEK_END)
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        f.seek(position)
        yield position, f.read(step)


def last_lines(path, count):
    """The last ``count`` complete lines of the log at ``path`` (decoded,
    oldest first), read backwards from its end in blocks. Bytes after the
    last newline (a write under way) are not a line yet."""
    if count <= 0:
        return []
    blocks, newlines, position = [], 0, 0
    with open(path, "rb") as f:
        # count complete lines need count + 1 newlines in view (the first
        # line in view may be cut), or the start of the file.
        for position, block in _blocks_from_end(f):
            blocks.append(block)
            newlines += block.count(b"\n")
            if newlines > count:
                break
    tail = b"".join(reversed(blocks))
    lines = tail[: tail.rfind(b"\n") + 1].split(b"\n")[:-1]
    if position > 0:
        lines = lines[1:]
    return [line.decode("utf-8") for line in lines[-count:]]
