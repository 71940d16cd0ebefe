"""`catalog cluster --ray ADDRESS`: the blocks of a size clustered in blocks (`_blocks`) as Ray tasks.

Each block is one task (half a CPU, retried if a worker dies) that assigns its kernels to the
fitted centres, or names them and writes its `labels` part into the data root; the driver streams
the blocks and collects the results in block order. Embedding with --ray: `analysis.embed._ray`.
"""
from __future__ import annotations

from kernel_catalog.store.ray_runtime import MAX_RETRIES, connect

MAX_IN_FLIGHT = 64      # blocks the driver has handed to tasks and not yet collected


def ray_map_blocks(address: str, fn, blocks, shared: dict) -> list:
    """fn(block, **shared) for every block as Ray tasks (half a CPU each, retried if a worker
    dies), results in block order. The driver streams the blocks: at most twice the cluster's
    CPUs, and at most MAX_IN_FLIGHT, are in flight (~100 MB each at 2^18 7x7 kernels), so the
    object store holds a few GB at most, never the size (`_blocks`)."""
    from kernel_catalog.store.ray_runtime import task_options

    ray = connect(address)
    task = ray.remote(num_cpus=0.5, max_retries=MAX_RETRIES)(fn)
    refs = {name: ray.put(value) for name, value in shared.items()}
    limit = min(MAX_IN_FLIGHT, max(2, int(2 * ray.cluster_resources().get("CPU", 1))))
    results, pending = {}, {}
    for i, block in enumerate(blocks):
        if len(pending) >= limit:
            done, _ = ray.wait(list(pending), num_returns=1)
            results[pending.pop(done[0])] = ray.get(done[0])
        pending[task.options(**task_options()).remote(block, **refs)] = i
    for ref, i in pending.items():
        results[i] = ray.get(ref)
    return [results[i] for i in sorted(results)]
