"""Lightning's "💡 Tip: try installing litlogger / litmodels" lines: advertisements for a hosted service, printed
on every run, that say nothing about the run. The command line drops them (``attnzoo.training.cli.make_cli``
installs the filter); importing attnzoo.training changes no logging, so a Python user's Lightning logs stay
theirs (``hide_advertisements()`` drops them there too). Lightning's other messages pass unchanged."""

from __future__ import annotations

import logging

LIGHTNING_LOGGER = "lightning.pytorch.utilities.rank_zero"


class NoAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_FILTER = NoAdvertisements()


def hide_advertisements() -> None:
    """Idempotent: the one filter instance is added once."""
    logging.getLogger(LIGHTNING_LOGGER).addFilter(_FILTER)
