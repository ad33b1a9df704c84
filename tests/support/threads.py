"""Running a blocking call beside the test (e.g. a long answer while the test probes the server)."""

import threading


def in_background(fn):
    """Run fn in a thread; returns (thread, box) where box gets "result" or "error"."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box
