"""The part every test server run as a child process shares: stop it politely, then firmly."""

from __future__ import annotations

import subprocess


class ServerProcess:
    proc: subprocess.Popen
    stop_timeout_s = 10

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
