"""twistd entry point: command-line options and the service they build."""

from __future__ import annotations

import sys

from twisted.python import usage

from s3orchestrator.config import LOG_FORMATS, LOG_LEVELS, Config, ConfigError, load_config
from s3orchestrator.ops.logs import log_destination
from s3orchestrator.ops.manhole import check_manhole_config
from s3orchestrator.service import OrchestratorService
from s3orchestrator.workers.supervisor import SupervisorService


class Options(usage.Options):
    """``twistd s3orchestrator`` options."""

    optParameters = [
        ["config", "c", "/etc/s3orchestrator/s3orchestrator.toml", "Path to the TOML configuration file."],
        ["log-format", None, None, "text or json (one JSON object per line); overrides logging.format."],
        ["log-level", None, None, "debug, info, warn or error: the lowest level logged; overrides logging.level."],
    ]

    config: Config

    def postOptions(self) -> None:
        if self["log-format"] not in (None, *LOG_FORMATS):
            raise usage.UsageError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if self["log-level"] not in (None, *LOG_LEVELS):
            raise usage.UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        try:
            self.config = load_config(self["config"])
            if self.config.ops.manhole is not None:
                check_manhole_config(self.config.ops.manhole)
        except ConfigError as error:
            # One clear line naming the offending key, not a usage dump or a traceback.
            sys.exit(f"s3orchestrator: invalid configuration: {error}")


def makeService(options: Options, reactor=None) -> OrchestratorService | SupervisorService:
    """Build the daemon's MultiService from parsed options: the whole daemon, or with
    ``server.workers`` above 1 the supervisor of that many worker processes."""
    if reactor is None:
        from twisted.internet import reactor
    # Where twistd itself would log (-n, --logfile, --syslog), in our format and level.
    twistd_options = options.parent if options.parent is not None else {"nodaemon": True}
    log_format = options["log-format"] or options.config.ops.log_format
    service: OrchestratorService | SupervisorService
    if options.config.server.workers > 1:
        service = SupervisorService(options.config, reactor, options["config"], twistd_options, log_format)
    else:
        service = OrchestratorService(options.config, reactor, config_path=options["config"])
    log_level = options["log-level"] or options.config.ops.log_level
    service.log_to(log_destination(twistd_options, log_format, reactor), log_level)
    return service
