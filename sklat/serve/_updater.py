"""Online updates of a served model, in a background process.

Every ``update_every`` observations the service hands the process the model
it serves; the process reads the last ``window`` observations and

1. measures the served model on them (the share of decode totals inside its
   90% intervals: the window's coverage) and checks them for drift
   (:func:`sklat.control.check_drift` on the newest ``update_every``);
2. recalibrates the base model (the one the service started with, or the
   last refit) on the window, or, after ``drift_patience`` drift findings
   in a row, refits it on the window (same parameters), which becomes the
   new base;
3. writes the result as the next version (``models/v<k>.safetensors``,
   written whole, then renamed) and reports it; the service swaps it in.

A process, not a thread: a refit's work never holds the service's
interpreter, and it runs at a lower scheduling priority so that calls keep
their latency during it. It is ``python -m sklat.serve._worker`` talking
JSON lines over its standard input and output (not ``multiprocessing``,
whose spawn re-imports the main script of whoever embeds the service).
Updates never overlap: observations that arrive during one are in the next
one's window.
"""

import json
import subprocess
import sys
import threading


class Updater:
    """The service's side: starts the process, hands it work, swaps in what
    it makes.

    Parameters
    ----------
    settings : ServeSettings
    store : ModelStore
    metrics : Metrics
    """

    def __init__(self, settings, store, metrics):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._lock = threading.Lock()
        self._busy = False
        self._pending = False
        self._issued = store.current().version
        config = {
            "observations": str(settings.observations),
            "window": settings.window,
            "update_every": settings.update_every,
            "drift_alpha": settings.drift_alpha,
            "drift_patience": settings.drift_patience,
            "base_path": str(store.current().path),
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "sklat.serve._worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()

    def alive(self):
        return self._process.poll() is None

    def observed(self, before, after):
        """Observations went from ``before`` to ``after``: start an update
        if a multiple of ``update_every`` was crossed (or mark one pending
        while one runs)."""
        every = self.settings.update_every
        if after // every == before // every:
            return
        with self._lock:
            if self._busy:
                self._pending = True
                return
            self._busy = True
        self._send()

    def _send(self):
        served = self.store.current()
        self._issued = max(self._issued, served.version) + 1
        message = {"served_path": str(served.path), "version": self._issued}
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
        except (BrokenPipeError, ValueError):  # the process ended
            self.metrics.update_failed("the update process is not running")

    def _listen(self):
        for line in self._process.stdout:
            result = json.loads(line)
            if "error" in result:
                self.metrics.update_failed(result["error"])
            else:
                self.store.swap(result["version"], result["path"])
                self.metrics.updated(result)
            with self._lock:
                again, self._pending = self._pending, False
                self._busy = again
            if again:
                self._send()

    def close(self):
        """End the process (an update in flight is abandoned: its version is
        written whole or not at all)."""
        try:
            self._process.stdin.close()
            self._process.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            self._process.kill()
            self._process.wait()
