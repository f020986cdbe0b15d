"""The S3 listener's client limits (server.header_timeout, server.min_upload_rate) reach its
site, and a reload changes them."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from s3orchestrator.tap import Options, makeService

CONFIG = """
[server]
listen = "tcp:0:interface=127.0.0.1"
{limits}
[metadata]
sqlite = "{directory}/metadata.sqlite"
[[buckets]]
name = "app1-files"
  [[buckets.credentials]]
  access_key_id = "AKID_APP1_WRITER"
  secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiTESTSECRET"
[[stores]]
name = "local-a"
type = "directory"
path = "{directory}/store"
quota_bytes = 0
"""


def write_config(path: Path, limits: str) -> Path:
    path.write_text(CONFIG.format(limits=limits, directory=path.parent))
    return path


@pytest_twisted.ensureDeferred
async def test_the_site_gets_the_configured_limits_and_a_reload_changes_them(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "header_timeout = 7\nmin_upload_rate = 100\nupload_rate_window = 4")
    options = Options()
    options.parseOptions(["--config", str(config)])
    service = makeService(options, reactor=reactor)
    site = service.site
    assert (site.header_timeout, site.min_upload_rate, site.upload_rate_window) == (7.0, 100, 4.0)
    await service.metadata.start()
    try:
        write_config(config, "header_timeout = 3\nmin_upload_rate = 0\nupload_rate_window = 2")
        assert await service.reload()
    finally:
        service.metadata.database.close()
    assert (site.header_timeout, site.min_upload_rate, site.upload_rate_window) == (3.0, 0, 2.0)
