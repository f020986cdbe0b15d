"""Starting the daemon: a bad config is one clear line naming the key, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.daemon import REPO, StoreSpec, free_port, write_config


def _project_installed() -> bool:
    """Whether this interpreter imports s3orchestrator from an installed package (not the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([sys.executable, "-c", "import s3orchestrator"], cwd="/", env=env, capture_output=True)
    return probe.returncode == 0


def run_twistd(config, cwd) -> subprocess.CompletedProcess:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    return subprocess.run(
        [twistd, "--nodaemon", "--pidfile=", "s3orchestrator", "--config", str(config)],
        cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60,
    )


def test_bad_config_stops_with_one_line_naming_the_key(tmp_path):
    config = write_config(tmp_path, free_port(), [StoreSpec("local-a", 100)])
    config.write_text(config.read_text().replace("quota_bytes = 100", "quota_bytes = -5"))
    result = run_twistd(config, tmp_path)
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert output.splitlines()[-1] == (
        "s3orchestrator: invalid configuration: stores[0].quota_bytes: must be a non-negative integer (got -5)")


def test_missing_environment_variable_names_key_and_variable(tmp_path):
    config = write_config(tmp_path, free_port(), [StoreSpec("local-a", 100)])
    config.write_text(config.read_text().replace('secret_access_key = "app2-secret-for-tests-only"',
                                                 'secret_access_key = "${S3O_TEST_UNSET_SECRET}"'))
    result = run_twistd(config, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "buckets[1].credentials[0].secret_access_key" in result.stderr
    assert "S3O_TEST_UNSET_SECRET" in result.stderr


@pytest.mark.skipif(
    not _project_installed(), reason="the project is not installed in this environment (make test installs it)")
def test_installed_plugin_is_found_by_twistd_without_pythonpath(tmp_path):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([twistd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "s3orchestrator" in result.stdout
