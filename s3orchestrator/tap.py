"""twistd entry point: command-line options and the service they build."""

from __future__ import annotations

import sys

from twisted.python import usage

from s3orchestrator.config import Config, ConfigError, load_config
from s3orchestrator.service import OrchestratorService


class Options(usage.Options):
    """``twistd s3orchestrator`` options."""

    optParameters = [
        ["config", "c", "/etc/s3orchestrator/s3orchestrator.toml", "Path to the TOML configuration file."],
    ]

    config: Config

    def postOptions(self) -> None:
        try:
            self.config = load_config(self["config"])
        except ConfigError as error:
            # One clear line naming the offending key, not a usage dump or a traceback.
            sys.exit(f"s3orchestrator: invalid configuration: {error}")


def makeService(options: Options, reactor=None) -> OrchestratorService:
    """Build the daemon's MultiService from parsed options."""
    if reactor is None:
        from twisted.internet import reactor
    return OrchestratorService(options.config, reactor)
