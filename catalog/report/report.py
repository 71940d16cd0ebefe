"""`catalog report`: the paper's Table 1 and Figure 8 (as tables) from a run, through SQL only.

- by model (Table 1): kernels, usable, classified %, and the null model's classified % for the
  same kernel-size mix (an iid Gaussian control run through the same protocol);
- by layer / depth (Figure 8): the share of each named cluster per layer or depth bin;
- by kernel_size: classified % vs null and cluster shares per size;
- by cluster: each cluster's name, best template, match score and share.
An embed run reports classification only; a cluster run adds the cluster shares.
"""
from __future__ import annotations

import pyarrow as pa

from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.runs import require_run
from kernel_catalog.store import Catalog

GROUPINGS = ("model", "layer", "depth", "kernel_size", "cluster")
DEPTH_BINS = 5


def _size_table(metrics: dict) -> pa.Table:
    """Per kernel size: the threshold used and the null model's classified fraction."""
    rows = [(int(key.split("x")[0]), int(key.split("x")[1]), m.get("threshold"), m.get("null_classified"))
            for key, m in metrics.items()]
    return pa.table({"kh": [r[0] for r in rows], "kw": [r[1] for r in rows],
                     "threshold": pa.array([r[2] for r in rows], pa.float64()),
                     "null_classified": pa.array([r[3] for r in rows], pa.float64())})


def _classification_sql(group: str, extra_select: str = "") -> str:
    return f"""
        SELECT {group}{extra_select}, count(*) AS kernels, count(*) FILTER (WHERE e.usable) AS usable,
               round(100 * avg(CASE WHEN e.usable THEN (1 - e.recon_cos < s.threshold)::INT END), 1) AS classified_pct,
               round(100 * sum(CASE WHEN e.usable THEN s.null_classified END)
                     / nullif(count(*) FILTER (WHERE e.usable), 0), 1) AS null_classified_pct
        FROM embeddings e JOIN kernels k USING (kernel_id)
             JOIN size_metrics s ON e.kh = s.kh AND e.kw = s.kw
        WHERE e.run = $embed_run
        GROUP BY ALL ORDER BY ALL"""


def _shares_sql(keys: list[str], key_select: str) -> str:
    """Long form: one row per (group, label) with its share; pivoted to columns afterwards."""
    group = ", ".join(keys)
    return f"""
        SELECT {key_select}, l.label, count(*) / sum(count(*)) OVER (PARTITION BY {group}) AS share
        FROM labels l JOIN kernels k USING (kernel_id)
        WHERE l.run = $cluster_run AND l.cluster IS NOT NULL AND (NOT $classified_only OR l.classified)
        GROUP BY {group}, l.label"""


def _pivot(con, long: pa.Table, keys: list[str]) -> pa.Table:
    """One column per cluster label (DuckDB cannot PIVOT a parameterised query directly)."""
    if long.num_rows == 0:
        return long
    con.register("shares_long", long)
    group = ", ".join(keys)
    return con.sql(f"PIVOT shares_long ON label USING coalesce(round(first(share), 3), 0) GROUP BY {group} "
                   f"ORDER BY {group}").to_arrow_table()


def report(catalog: Catalog, run: str, by: str = "model", classified_only: bool = False) -> pa.Table:
    """One report table for `run` grouped `by` one of GROUPINGS."""
    if by not in GROUPINGS:
        raise CatalogError(f"--by {by}: choose one of {', '.join(GROUPINGS)}")
    record = require_run(catalog, run)
    embed_run = record["run"] if record["kind"] == "embed" else record["parent"]
    cluster_run = run if record["kind"] == "cluster" else None
    embed_record = require_run(catalog, embed_run, "embed")
    if cluster_run is None and by in ("layer", "depth", "cluster"):
        raise CatalogError(f"run '{run}' is an embed run: --by {by} needs a cluster run (see `catalog cluster`)")
    depth_bin = f"least(floor(k.depth * {DEPTH_BINS}), {DEPTH_BINS - 1}) / {DEPTH_BINS}"
    queries = {
        "model": _classification_sql("k.model"),
        "kernel_size": _classification_sql("e.kh || 'x' || e.kw AS size"),
        "layer": _shares_sql(["model", "layer_index"], "k.model, k.layer_index"),
        "depth": _shares_sql(["depth_from"], f"round({depth_bin}, 2) AS depth_from"),
        "cluster": """SELECT kh || 'x' || kw AS size, cluster, label, template, round(score, 3) AS score,
                             round(margin, 3) AS margin, n_kernels, round(share, 3) AS share
                      FROM clusters WHERE run = $cluster_run ORDER BY kh, kw, n_kernels DESC""",
    }
    params = {"embed_run": embed_run, "cluster_run": cluster_run, "classified_only": classified_only}
    sql = queries[by]
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    with catalog.reader() as con:
        con.register("size_metrics", _size_table(embed_record["metrics"]))
        table = con.sql(sql, params=used).to_arrow_table()
        if by in ("layer", "depth"):
            table = _pivot(con, table, ["model", "layer_index"] if by == "layer" else ["depth_from"])
        return table
