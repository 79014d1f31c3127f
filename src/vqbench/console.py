"""What a training or evaluation prints: each log line once, and no advertisements.

Lightning gives its ``lightning`` logger a console handler of its own (``lightning/__init__.py``) and also lets it
propagate to the root logger, where Hydra has installed its console and ``run.log`` handlers: every Lightning message
was printed twice. ``tidy_console`` removes Lightning's own handler when the root logger has handlers, so each message
is printed once, in Hydra's format, and also lands in ``run.log``. It also drops Lightning's "💡 Tip: ..." messages
(advertisements for litlogger / litmodels, logged through ``rank_zero_info`` at every ``Trainer`` construction) with a
logging filter on the logger that emits them; every other message of that logger passes.
"""

from __future__ import annotations

import logging

#: The loggers through which Lightning's rank_zero_info emits its messages (lightning.{pytorch,fabric}.utilities).
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
ADVERTISEMENT_PREFIX = "💡 Tip:"


class DropAdvertisements(logging.Filter):
    """Drops the log records that advertise a third-party service (Lightning's "💡 Tip: ..." lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(ADVERTISEMENT_PREFIX)


def tidy_console() -> None:
    """One console line per log message, no advertisements (idempotent; see the module docstring)."""
    import lightning  # noqa: F401  (its import installs the handler removed below)

    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropAdvertisements) for f in logger.filters):
            logger.addFilter(DropAdvertisements())
