"""The user guide's sync/listing/delete commands with the aws clis, rclone and s3cmd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import AWS_CLIS, aws_cli, make_client, rclone_runner, s3cmd_runner
from tests.integration.daemon import BUCKET, Daemon


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def remote_tree(daemon: Daemon, prefix: str) -> dict[str, bytes]:
    s3 = make_client(daemon)
    keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for obj in page.get("Contents", [])]
    return {key[len(prefix):]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


TREE = {
    "a.txt": b"alpha",
    "dir/b.bin": os.urandom(20000),
    "dir/sub/c with space.txt": b"gamma",
    "unicodé.txt": "ünïcode".encode(),
}


def run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("cli", sorted(AWS_CLIS))
def test_aws_s3_sync_up_down_and_delete(daemon, tmp_path, cli):
    aws = aws_cli(cli, daemon, tmp_path)
    local = tmp_path / "local-dir"
    make_tree(local, TREE)
    aws("s3", "sync", f"{local}/", f"s3://{BUCKET}/backup/")
    assert remote_tree(daemon, "backup/") == TREE

    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{BUCKET}/backup/", f"{back}/")
    assert read_tree(back) == TREE

    (local / "a.txt").unlink()
    (local / "new.txt").write_bytes(b"new")
    aws("s3", "sync", f"{local}/", f"s3://{BUCKET}/backup/", "--delete")
    assert remote_tree(daemon, "backup/") == read_tree(local)

    listing = aws("s3", "ls", f"s3://{BUCKET}/backup/")
    assert "PRE dir/" in listing and "new.txt" in listing
    recursive = aws("s3", "ls", f"s3://{BUCKET}/backup/", "--recursive")
    assert "backup/dir/sub/c with space.txt" in recursive


@pytest.fixture
def rclone(daemon: Daemon, tmp_path: Path):
    return rclone_runner(daemon, tmp_path)


def test_rclone_copy_ls_lsd_sync_and_dry_run(rclone, daemon, tmp_path):
    source = tmp_path / "myfile.txt"
    source.write_bytes(b"rclone payload")
    rclone("copy", str(source), f"orchestrator:{BUCKET}/path/to/")
    rclone("copy", f"orchestrator:{BUCKET}/path/to/myfile.txt", str(tmp_path / "down"))
    assert (tmp_path / "down" / "myfile.txt").read_bytes() == b"rclone payload"

    local = tmp_path / "local-dir"
    make_tree(local, TREE)
    rclone("sync", f"{local}/", f"orchestrator:{BUCKET}/backup/")
    assert remote_tree(daemon, "backup/") == TREE
    assert "dir" in rclone("lsd", f"orchestrator:{BUCKET}/backup/")
    listed = rclone("ls", f"orchestrator:{BUCKET}/")
    assert "path/to/myfile.txt" in listed and "backup/dir/sub/c with space.txt" in listed

    (local / "a.txt").unlink()
    (local / "extra.txt").write_bytes(b"extra")
    rclone("sync", f"{local}/", f"orchestrator:{BUCKET}/backup/", "--dry-run")
    assert remote_tree(daemon, "backup/") == TREE  # a dry run changes nothing
    rclone("sync", f"{local}/", f"orchestrator:{BUCKET}/backup/")
    assert remote_tree(daemon, "backup/") == read_tree(local)  # the extra remote object is gone


@pytest.fixture
def s3cmd(daemon: Daemon, tmp_path: Path):
    return s3cmd_runner(daemon, tmp_path)


def test_s3cmd_put_ls_get_del(s3cmd, tmp_path):
    source = tmp_path / "file.txt"
    source.write_bytes(b"s3cmd payload")
    s3cmd("put", str(source), f"s3://{BUCKET}/docs/file.txt")
    assert f"s3://{BUCKET}/docs/file.txt" in s3cmd("ls", f"s3://{BUCKET}/docs/")
    assert "DIR" in s3cmd("ls", f"s3://{BUCKET}/")
    s3cmd("get", f"s3://{BUCKET}/docs/file.txt", str(tmp_path / "got.txt"))
    assert (tmp_path / "got.txt").read_bytes() == b"s3cmd payload"
    s3cmd("del", f"s3://{BUCKET}/docs/file.txt")
    assert "file.txt" not in s3cmd("ls", f"s3://{BUCKET}/docs/")
