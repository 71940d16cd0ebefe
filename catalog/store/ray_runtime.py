"""Joining Ray for `--ray ADDRESS`: `local` starts a local instance, `auto` or `ray://host:port`
joins a cluster. Ray is an optional extra; without it this is one line naming what to install.

Workers read their own environment (a cluster's nodes have theirs). The driver forwards only the
variables named in `KERNEL_CATALOG_RAY_ENV` (comma-separated, e.g. `HF_TOKEN,AWS_PROFILE`) to
every task it starts, never others: variables may hold secrets, or paths that exist only on the
driver (HF_HOME, a local cache)."""
from __future__ import annotations

import os

from kernel_catalog.errors import CatalogError
from kernel_catalog.store.datafs import INSTALL_HINT
from kernel_catalog.store.faults import CRASH_ENV, ONCE_ENV


MAX_RETRIES = 3     # a task whose worker dies is run again this many times (same inputs, same result)
FORWARD_ENV = "KERNEL_CATALOG_RAY_ENV"


def connect(address: str):
    """The `ray` module, initialised for `address` (an instance this process already joined is reused)."""
    forwarded_names()                   # a malformed KERNEL_CATALOG_RAY_ENV is said before joining
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


def forwarded_names() -> list[str]:
    """The driver variables named in KERNEL_CATALOG_RAY_ENV; one line for a name that cannot be one."""
    names = [n.strip() for n in os.environ.get(FORWARD_ENV, "").split(",") if n.strip()]
    for name in names:
        if not (name.isascii() and name.isidentifier()):
            raise CatalogError(f"{FORWARD_ENV}: {name!r} is not an environment variable name; "
                               "give names separated by commas, e.g. HF_TOKEN,AWS_PROFILE")
    return names


def task_options() -> dict:
    """Options for tasks: the variables KERNEL_CATALOG_RAY_ENV names (those set on the driver) and
    the fault-injection ones (tests only) reach the workers; else nothing."""
    env = {k: os.environ[k] for k in forwarded_names() if k in os.environ}
    env.update({k: os.environ[k] for k in (CRASH_ENV, ONCE_ENV) if os.environ.get(k)})
    return {"runtime_env": {"env_vars": env}} if env else {}
