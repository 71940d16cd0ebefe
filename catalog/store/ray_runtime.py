"""Joining Ray for `--ray ADDRESS`: `local` starts a local instance, `auto` or `ray://host:port`
joins a cluster. Ray is an optional extra; without it this is one line naming what to install."""
from __future__ import annotations

import os

from kernel_catalog.errors import CatalogError
from kernel_catalog.store.datafs import INSTALL_HINT
from kernel_catalog.store.faults import CRASH_ENV, ONCE_ENV


MAX_RETRIES = 3     # a task whose worker dies is run again this many times (same inputs, same result)


def connect(address: str):
    """The `ray` module, initialised for `address` (an instance this process already joined is reused)."""
    try:
        import ray
    except ImportError:
        raise CatalogError(f"--ray needs the optional cluster packages (Ray, boto3); {INSTALL_HINT}") from None
    if not ray.is_initialized():
        env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise CatalogError(f"--ray {address}: cannot join the Ray cluster ({' '.join(str(error).split())[:200]})") from None
    return ray


def is_remote(address: str) -> bool:
    """Whether workers may run on other machines (then they cannot write the driver's folder)."""
    return address != "local"


def require_shared_data(data, address: str) -> None:
    """Workers on other machines cannot reach a catalog folder on the driver: one line saying so."""
    if data.is_local and is_remote(address):
        raise CatalogError(f"--ray {address}: workers on other machines cannot read or write the local catalog "
                           "folder; create the catalog with `catalog init --data-root s3://...`")


def task_options() -> dict:
    """Options for tasks: fault-injection variables reach the workers (tests only; else nothing)."""
    env = {k: os.environ[k] for k in (CRASH_ENV, ONCE_ENV) if os.environ.get(k)}
    return {"runtime_env": {"env_vars": env}} if env else {}
