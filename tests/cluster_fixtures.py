"""Real parts for the beyond-one-machine tests: an S3-compatible server (moto_server) on
127.0.0.1, started once per test session (each test gets its own bucket) and ended by its own
process id, and one local Ray instance (2 CPUs, no dashboard) for the Ray module's few tests."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HF_UNSET = ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto_server on a free port; yields its endpoint URL."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    port = free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    try:
        yield endpoint
    finally:
        process.terminate()           # our own process, by its id
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """The standard AWS variables pointing at the server, a fresh bucket, a private snapshot cache."""
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "KERNEL_CATALOG_CACHE": str(tmp_path / "user-cache")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import boto3

    bucket = f"kc-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    env["BUCKET"] = bucket
    return env


@pytest.fixture(scope="module")
def ray_hub(tmp_path_factory):
    """A local hub server for the Ray module (tests/hub_server.py) and the HF cache folder its
    workers download into: (server, cache)."""
    from .hub_server import HubServer

    server = HubServer()
    server.start()
    try:
        yield server, tmp_path_factory.mktemp("ray-hf") / "hf-cache"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_local(s3_server, ray_hub):
    """One local Ray instance for a module's few Ray tests (2 CPUs, no dashboard). Its workers
    inherit the AWS variables pointing at the module's S3 server and the HF variables pointing at
    its hub server (set before ray.init), as a real cluster's workers get theirs from their own
    environment."""
    ray = pytest.importorskip("ray")
    server, cache = ray_hub
    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache),
           "HF_HUB_DISABLE_TELEMETRY": "1", "KERNEL_CATALOG_HUB_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in (*env, *HF_UNSET)}
    for key in HF_UNSET:
        os.environ.pop(key, None)
    os.environ.update(env)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}})
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def s3_objects(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    # (pyarrow leaves an empty "folder/" marker object when it deletes a folder's last file)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


def env_for_cli(env: dict) -> dict:
    return {k: v for k, v in env.items() if k != "BUCKET"} | {"PATH": os.environ.get("PATH", "")}
