"""`attnzoo` with a pause point, for tests that SIGKILL a real run at a chosen moment.

ATTNZOO_TEST_PAUSE selects the moment; when the run reaches it, this script writes ATTNZOO_TEST_MARKER and
sleeps until the test kills it:

- ``batch:N``: at the start of the N-th training batch of this process (1-based), between two checkpoints.
- ``sigterm:N``: no pause; during the N-th training batch the process receives SIGTERM (as a cluster announces
  a pre-emption) and goes on.
- ``fsync:NAME:N``: inside the N-th write of checkpoint file NAME, after its bytes were written to the temporary
  file and before they reach the disk (``os.fsync``) and the final name (``os.replace``).
- ``replaced:NAME:N``: just after the N-th write of NAME was renamed into place.

Nothing else changes: the command line is `attnzoo`'s own (``attnzoo.cli.main``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def pause() -> None:
    Path(os.environ["ATTNZOO_TEST_MARKER"]).write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def install(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    if kind in ("batch", "sigterm"):
        import signal

        from attnzoo.training.module import ImageClassifier

        target, seen = int(rest), [0]
        step = ImageClassifier.training_step

        def training_step(self, batch, batch_idx):
            seen[0] += 1
            if seen[0] == target:
                if kind == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    pause()
            return step(self, batch, batch_idx)

        ImageClassifier.training_step = training_step
    elif kind in ("fsync", "replaced"):
        name, _, count = rest.rpartition(":")
        target, seen = int(count), [0]
        if kind == "fsync":
            real_fsync = os.fsync

            def fsync(fd):
                path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
                if f".{name}." in os.path.basename(path):
                    seen[0] += 1
                    if seen[0] == target:
                        pause()
                return real_fsync(fd)

            os.fsync = fsync
        else:
            real_replace = os.replace

            def replace(src, dst, *args, **kwargs):
                result = real_replace(src, dst, *args, **kwargs)
                if os.path.basename(str(dst)) == name:
                    seen[0] += 1
                    if seen[0] == target:
                        pause()
                return result

            os.replace = replace
    else:
        raise SystemExit(f"unknown ATTNZOO_TEST_PAUSE {spec!r}")


if __name__ == "__main__":
    if os.environ.get("ATTNZOO_TEST_PAUSE"):
        install(os.environ["ATTNZOO_TEST_PAUSE"])
    from attnzoo.cli import main

    sys.argv[0] = "attnzoo"
    main(sys.argv[1:])
