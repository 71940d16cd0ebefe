"""`catalog report`: the paper's Table 1 and Figure 8 (as tables) from a run, through SQL only.

- by model (Table 1): kernels, usable, classified %, and the null model's classified % for the
  same kernel-size mix (an iid Gaussian control run through the same protocol), at the threshold
  the run uses and, beside it, at the paper's fixed threshold and at the calibrated one (the null
  classified at most alpha);
- by layer / depth (Figure 8): the share of each named cluster per layer or depth bin;
- by kernel_size: classified % vs null per size; for a cluster run its seed ARI and `clear_pct`,
  the share of kernels whose own name wins clearly (`labels.kernel_margin` >= the ambiguity
  margin, or one family only; NULL for runs written before kernel_margin existed);
- by cluster: each cluster's name, best template, match score and share, and `clear_share` of its
  kernels.
An embed run reports classification only; a cluster run adds the cluster shares.
"""
from __future__ import annotations

import pyarrow as pa

from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN
from kernel_catalog.analysis.params import MIN_VERDICT_KERNELS
from kernel_catalog.analysis.runs import RunRecord, require_run
from kernel_catalog.store import Catalog

GROUPINGS = ("model", "layer", "depth", "kernel_size", "cluster")
DEPTH_BINS = 5
_THRESHOLD_FIELDS = ("threshold", "null_classified", "threshold_fixed", "null_classified_fixed",
                     "threshold_calibrated", "null_classified_calibrated")


def _size_table(metrics: dict) -> pa.Table:
    """Per kernel size (and model, for per-model runs; NULL model = every model): the thresholds
    and the null model's classified fraction at each."""
    rows = []
    for key, m in metrics.items():
        kh, kw = (int(v) for v in key.split("x"))
        for model, mm in (m.get("models") or {None: m}).items():
            rows.append({"model": model, "kh": kh, "kw": kw, **{f: mm.get(f) for f in _THRESHOLD_FIELDS}})
    schema = pa.schema([("model", pa.string()), ("kh", pa.int64()), ("kw", pa.int64()),
                        *((f, pa.float64()) for f in _THRESHOLD_FIELDS)])
    return pa.Table.from_pylist(rows, schema=schema)


def _classification_sql(group: str, extra_select: str = "") -> str:
    def pct(threshold: str) -> str:
        return f"round(100 * avg(CASE WHEN e.usable THEN (1 - e.recon_cos < {threshold})::INT END), 1)"

    def null_pct(column: str) -> str:
        return (f"round(100 * sum(CASE WHEN e.usable THEN s.{column} END) "
                f"/ nullif(count(*) FILTER (WHERE e.usable), 0), 1)")

    return f"""
        SELECT {group}{extra_select}, count(*) AS kernels, count(*) FILTER (WHERE e.usable) AS usable,
               {pct("s.threshold")} AS classified_pct, {null_pct("null_classified")} AS null_classified_pct,
               {pct("s.threshold_fixed")} AS paper_pct, {null_pct("null_classified_fixed")} AS paper_null_pct,
               {pct("s.threshold_calibrated")} AS calibrated_pct,
               {null_pct("null_classified_calibrated")} AS calibrated_null_pct
        FROM embeddings e JOIN kernels k USING (kernel_id)
             JOIN size_metrics s ON e.kh = s.kh AND e.kw = s.kw AND (s.model IS NULL OR s.model = k.model)
        WHERE e.run = $embed_run
        GROUP BY ALL ORDER BY ALL"""


def verdict_warnings(catalog: Catalog, run: str) -> list[str]:
    """One line per kernel size whose classified % is no verdict: fewer usable kernels than
    MIN_VERDICT_KERNELS (too small a selection: its scores are memory) unless it was scored held
    out (`embed --cross-fit`), or a null classified above alpha at the paper's fixed threshold
    (that column is no verdict; the calibrated one is)."""
    record = require_run(catalog, run)
    embed_record = record if record.kind == "embed" else require_run(catalog, record.parent, "embed")
    lines = []
    for key, m in sorted(embed_record.metrics.items()):
        usable, alpha = m.get("usable", 0), m.get("alpha") or embed_record.params.get("alpha", 0.05)
        null_fixed, calibrated = m.get("null_classified_fixed"), m.get("threshold_calibrated")
        reasons = []
        if usable < MIN_VERDICT_KERNELS and not m.get("cross_fit"):
            reasons.append(f"too small a selection for a verdict: only {usable} usable kernels "
                           f"(fewer than {MIN_VERDICT_KERNELS}; the autoencoder memorises them: "
                           "`catalog embed --cross-fit 5` scores each held out)")
        if null_fixed is not None and null_fixed > alpha:
            used = " (used)" if m.get("threshold_source") == "calibrated" else ""
            reasons.append(f"at the paper's threshold {m.get('threshold_fixed', 0):.2f} the null is classified "
                           f"{null_fixed:.0%} (above alpha {alpha:.0%}): read the calibrated threshold "
                           f"{calibrated:.3g}{used}")
        if reasons:
            lines.append(f"warning: {key}: " + "; ".join(reasons))
    return lines


def held_out_lines(catalog: Catalog, run: str) -> list[str]:
    """One line per kernel size (or per model of a per-model run) scored held out (cross-fitted):
    its folds, why (by default, below MIN_VERDICT_KERNELS usable kernels; or asked for), and the
    in-sample share it replaces."""
    record = require_run(catalog, run)
    embed_record = record if record.kind == "embed" else require_run(catalog, record.parent, "embed")
    lines = []
    for key, m in sorted(embed_record.metrics.items()):
        for model, mm in (m.get("models") or {None: m}).items():
            if not mm.get("cross_fit"):
                continue
            why = (f"by default: fewer than {MIN_VERDICT_KERNELS} usable kernels, whose in-sample scores are memory"
                   if mm.get("cross_fit_rule") == "auto" else "as asked (--cross-fit)")
            lines.append(f"{key}{'' if model is None else f' {model}'}: scored held out in {mm['cross_fit']} folds "
                         f"({why}): classified {mm['classified']:.1%}, in sample {mm['classified_in_sample']:.1%}")
    return lines


def seed_stability_lines(record: RunRecord) -> list[str]:
    """One line per size of a cluster run: its seed ARI (partition stability across seeds)."""
    return [f"{key}: seed ARI {m['seed_ari']:.2f} (k={m.get('k')}, {m.get('seed_ari_n')} kernels, 2 further seeds)"
            for key, m in sorted(record.metrics.items()) if "seed_ari" in m]


# A clear call: the kernel's own family wins by AMBIGUOUS_MARGIN (NULL margin: one family only).
# A run whose label files predate kernel_margin has no margin at all: NULL, not 100 %.
_CLEAR_SQL = f"""
    SELECT l.kh, l.kw, l.cluster,
           count(*) FILTER (WHERE coalesce(l.kernel_margin, 1) >= {AMBIGUOUS_MARGIN}) AS clear,
           count(*) AS n, count(l.kernel_margin) AS with_margin
    FROM labels l WHERE l.run = $cluster_run AND l.cluster IS NOT NULL GROUP BY ALL"""


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
    embed_run = record.run if record.kind == "embed" else record.parent
    cluster_run = run if record.kind == "cluster" else None
    embed_record = require_run(catalog, embed_run, "embed")
    if cluster_run is None and by in ("layer", "depth", "cluster"):
        raise CatalogError(f"run '{run}' is an embed run: --by {by} needs a cluster run (see `catalog cluster`)")
    depth_bin = f"least(floor(k.depth * {DEPTH_BINS}), {DEPTH_BINS - 1}) / {DEPTH_BINS}"
    queries = {
        "model": _classification_sql("k.model"),
        "kernel_size": _classification_sql("e.kh || 'x' || e.kw AS size",
                                           ", round(any_value(s.threshold), 4) AS threshold, round(any_value(c.seed_ari), 3) AS seed_ari, "
                                           "any_value(q.clear_pct) AS clear_pct")
        .replace("WHERE e.run", "LEFT JOIN seed_metrics c ON c.size = e.kh || 'x' || e.kw "
                                "LEFT JOIN clear_by_size q ON q.kh = e.kh AND q.kw = e.kw WHERE e.run"),
        "layer": _shares_sql(["model", "layer_index"], "k.model, k.layer_index"),
        "depth": _shares_sql(["depth_from"], f"round({depth_bin}, 2) AS depth_from"),
        "cluster": """SELECT kh || 'x' || kw AS size, cluster, label, family, polarity,
                             round(orientation, 1) AS orientation, round(scale, 2) AS scale, template,
                             round(score, 3) AS score, round(margin, 3) AS margin, n_kernels, round(share, 3) AS share,
                             CASE WHEN q.with_margin > 0 THEN round(q.clear / q.n, 3) END AS clear_share
                      FROM clusters c LEFT JOIN clear_counts q USING (kh, kw, cluster)
                      WHERE c.run = $cluster_run ORDER BY kh, kw, n_kernels DESC""",
    }
    params = {"embed_run": embed_run, "cluster_run": cluster_run, "classified_only": classified_only}
    sql = queries[by]
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    with catalog.reader() as con:
        con.register("size_metrics", _size_table(embed_record.metrics))
        seeds = record.metrics if record.kind == "cluster" else {}
        con.register("seed_metrics", pa.table({"size": list(seeds), "seed_ari": pa.array(
            [m.get("seed_ari") for m in seeds.values()], pa.float64())}))
        if by in ("kernel_size", "cluster"):     # the clear calls of a cluster run, per cluster and per size
            con.register("clear_counts", con.sql(_CLEAR_SQL, params={"cluster_run": cluster_run}).to_arrow_table())
            con.register("clear_by_size", con.sql(
                "SELECT kh, kw, CASE WHEN sum(with_margin) > 0 THEN round(100 * sum(clear) / sum(n), 1) END AS clear_pct "
                "FROM clear_counts GROUP BY ALL").to_arrow_table())
        table = con.sql(sql, params=used).to_arrow_table()
        if by in ("layer", "depth"):
            table = _pivot(con, table, ["model", "layer_index"] if by == "layer" else ["depth_from"])
        return table
