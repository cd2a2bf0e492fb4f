"""What every function does once at start: JSON logs, then the settings, or a clear exit.

A missing or invalid setting stops the instance at start-up with one log line naming the
variable and its remedy, instead of failing every event later.
"""

from __future__ import annotations

import logging
import os

from droptune.jsonlog import configure_logging, log_fields
from droptune.settings import Settings, SettingsError


def start_function(component: str) -> Settings:
    configure_logging(component)
    try:
        settings = Settings.from_environ(os.environ)
    except SettingsError as error:
        logging.getLogger(component).critical(
            "invalid settings", extra=log_fields(variable=error.variable, problem=str(error))
        )
        raise SystemExit(f"{component}: {error}") from None
    return settings
