"""What the figures and the gallery show, read from the catalog's views with SQL (no drawing here).

Every function returns plain numpy / Python data; `catalog.figures` draws it and
`catalog.gallery` writes it as HTML. Sampling is deterministic: candidates come back in a fixed
order (model, layer_index, expert, channel, kernel_id) and a `numpy.random.default_rng(seed)`
picks positions among them, so the same catalog, selection and seed give the same kernels.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.store.query import run_query
from kernel_catalog.report.report import report
from kernel_catalog.analysis.runs import require_run
from kernel_catalog.analysis.selection import where_error
from kernel_catalog.store import Catalog
from kernel_catalog.analysis.naming import FAMILY_NAMES, UNMATCHED

SORT_KEYS = ("cluster", "model", "layer_index", "l2")
DEFAULT_LIMIT = 400
SCALES = ("shared", "per-kernel")          # one symmetric colour scale per figure, or per kernel
MAX_LIMIT = 20_000
BASE_ORDER = "k.model, k.layer_index, k.expert, k.channel, k.kernel_id"


@dataclass
class KernelSample:
    """Kernels to draw, in display order, with the group each starts (for labelled grid rows)."""

    kernels: list[np.ndarray]            # each (kh, kw) float32, raw weights
    groups: list[str | None]             # group name per kernel (None: no grouping)
    n_matched: int                       # kernels matching the selection
    seed: int
    limit: int
    where: str | None = None
    sort_by: str | None = None
    run: str | None = None
    ids: list[int] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return self.n_matched > len(self.kernels)


def _weights(column: pa.ChunkedArray, kh: list[int], kw: list[int]) -> list[np.ndarray]:
    rows = column.to_pylist()
    return [np.asarray(w if w is not None else [np.nan] * (h * v), np.float32).reshape(h, v)
            for w, h, v in zip(rows, kh, kw)]


def sample_positions(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of `limit` out of `n` (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _cluster_group(kh, kw, cluster, label, run) -> str:
    if cluster is None:
        return f"not clustered in {run}"
    return f"{kh}x{kw} #{cluster} {label}"


def kernel_sample(catalog: Catalog, where: str | None = None, sort_by: str | None = None,
                  run: str | None = None, limit: int = DEFAULT_LIMIT, seed: int = 0) -> KernelSample:
    """The kernels matching `where` (SQL over the kernels view), sampled to `limit` with `seed`,
    then ordered by `sort_by` (cluster needs a cluster `run`: its labels are joined)."""
    if sort_by is not None and sort_by not in SORT_KEYS:
        raise CatalogError(f"--sort-by {sort_by}: choose one of {', '.join(SORT_KEYS)}")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise CatalogError(f"--limit {limit}: give a number of kernels between 1 and {MAX_LIMIT}")
    if sort_by == "cluster" and not run:
        raise CatalogError("--sort-by cluster needs --run RUN (a cluster run) to know each kernel's cluster")
    if run:
        require_run(catalog, run, "cluster")
    condition = where.strip() if where and where.strip() else "true"
    label_columns = ", l.cluster, l.label" if run else ", NULL::INTEGER AS cluster, NULL::VARCHAR AS label"
    join = "LEFT JOIN labels l ON l.kernel_id = k.kernel_id AND l.run = $run" if run else ""
    candidates_sql = f"""
        WITH k AS (SELECT * FROM kernels WHERE ({condition}))
        SELECT k.kernel_id, k.model, k.layer_index, k.channel, k.kh, k.kw, k.l2{label_columns}
        FROM k {join} ORDER BY {BASE_ORDER}"""
    params = {"run": run} if run else {}
    with catalog.reader() as con:
        try:
            candidates = con.sql(candidates_sql, params=params).to_arrow_table()
        except duckdb.Error as error:
            raise where_error(where, error) from None
        n = candidates.num_rows
        if n == 0:
            raise CatalogError(f"no kernels match --where {where!r}; check it with `catalog sql`" if where
                               else "the catalog holds no kernels; ingest some first")
        chosen = candidates.take(pa.array(sample_positions(n, limit, seed)))
        con.register("chosen_ids", chosen.select(["kernel_id"]))
        values = con.sql("SELECT k.kernel_id, k.weights FROM kernels k JOIN chosen_ids USING (kernel_id)").to_arrow_table()
        con.unregister("chosen_ids")
    weight_of = dict(zip(values.column("kernel_id").to_pylist(), values.column("weights").to_pylist()))
    rows = chosen.to_pylist()
    keys = {
        None: lambda r: 0,
        "cluster": lambda r: (r["kh"], r["kw"], r["cluster"] is None, r["cluster"] or 0),
        "model": lambda r: r["model"],
        "layer_index": lambda r: (r["layer_index"], r["model"]),
        "l2": lambda r: (r["l2"] is None, r["l2"] or 0.0),
    }
    rows.sort(key=keys[sort_by])               # stable: ties keep the fixed base order
    several_models = len({r["model"] for r in rows}) > 1
    group_of = {
        None: lambda r: None,
        "l2": lambda r: None,
        "cluster": lambda r: _cluster_group(r["kh"], r["kw"], r["cluster"], r["label"], run),
        "model": lambda r: r["model"],
        "layer_index": lambda r: f"layer {r['layer_index']}" + (f" {r['model']}" if several_models else ""),
    }[sort_by]
    kernels = [np.asarray(weight_of[r["kernel_id"]], np.float32).reshape(r["kh"], r["kw"]) for r in rows]
    return KernelSample(kernels, [group_of(r) for r in rows], n, seed, limit, where, sort_by, run,
                        [r["kernel_id"] for r in rows])


def label_order(labels) -> list[str]:
    """A fixed order for label names: built-in families first (in their order, then by label:
    polarity and orientation), then others alphabetically, `unmatched` last (the same in every
    figure and page). An ambiguous name `a|b` sorts with `a`."""
    present = set(labels)

    def key(label: str):
        family = label.split("|")[0].split("-")[0]
        rank = FAMILY_NAMES.index(family) if family in FAMILY_NAMES else len(FAMILY_NAMES)
        return (label == UNMATCHED, rank, label)

    return sorted(present, key=key)


def _preprocess_method(catalog: Catalog, record) -> str:
    return require_run(catalog, record.parent, "embed").preprocess if record.parent else "center-l2"


def cluster_prototypes(catalog: Catalog, run: str) -> list[dict]:
    """One dict per cluster of a cluster run, by size then share: the clusters view's columns,
    `clear_share` (as `catalog report --by cluster`), `mean` (kh, kw) and `medoid` (kh, kw,
    preprocessed like the run's kernels, or None)."""
    record = require_run(catalog, run, "cluster")
    rows = run_query(catalog, """
        SELECT c.kh, c.kw, c.cluster, c.label, c.template, c.score, c.margin, c.n_kernels, c.share, c.mean_kernel,
               c.medoid_kernel_id, k.weights AS medoid_weights, k.model AS medoid_model,
               k.layer_index AS medoid_layer_index, k.channel AS medoid_channel
        FROM clusters c LEFT JOIN kernels k ON k.kernel_id = c.medoid_kernel_id
        WHERE c.run = ? ORDER BY c.kh, c.kw, c.share DESC, c.cluster""", [run]).to_pylist()
    if not rows:
        raise CatalogError(f"run '{run}' has no clusters")
    method = _preprocess_method(catalog, record)
    clear = {(r["size"], r["cluster"]): r["clear_share"] for r in report(catalog, run, "cluster").to_pylist()}
    for row in rows:
        kh, kw = row["kh"], row["kw"]
        row["clear_share"] = clear.get((f"{kh}x{kw}", row["cluster"]))
        row["mean"] = np.asarray(row.pop("mean_kernel"), np.float32).reshape(kh, kw)
        medoid = row.pop("medoid_weights")
        if medoid is None:
            row["medoid"] = None
        else:
            x, usable = preprocess(np.asarray(medoid, np.float32).reshape(1, -1), method)
            row["medoid"] = x[0].reshape(kh, kw).astype(np.float32) if usable[0] else None
    return rows


def require_model(catalog: Catalog, model: str) -> None:
    known = run_query(catalog, "SELECT model FROM models ORDER BY model").column("model").to_pylist()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `catalog models`"
        raise CatalogError(f"model '{model}' is not in catalog {catalog.root}; {hint}")


@dataclass
class LayerShares:
    model: str
    run: str
    layer_index: list[int]               # layers of the model that have kernels in the run
    sizes: list[str]                     # "5x5" per layer
    counts: list[int]                    # clustered kernels per layer
    labels: list[str]                    # label_order of the labels present
    shares: np.ndarray                   # (n_layers, n_labels), rows sum to 1


def layer_shares(catalog: Catalog, run: str, model: str) -> LayerShares:
    """Share of each cluster label among the clustered kernels of every layer of `model`."""
    require_run(catalog, run, "cluster")
    require_model(catalog, model)
    rows = run_query(catalog, """
        SELECT k.layer_index, any_value(k.kh || 'x' || k.kw) AS size, l.label, count(*) AS n
        FROM labels l JOIN kernels k USING (kernel_id)
        WHERE l.run = ? AND k.model = ? AND l.cluster IS NOT NULL
        GROUP BY k.layer_index, l.label ORDER BY k.layer_index, l.label""", [run, model]).to_pylist()
    if not rows:
        raise CatalogError(f"model '{model}' has no clustered kernels in run '{run}'; "
                           "see `catalog report --run RUN --by layer` for the models it covers")
    layers = sorted({r["layer_index"] for r in rows})
    labels = label_order(r["label"] for r in rows)
    counts = np.zeros((len(layers), len(labels)))
    size = {}
    for r in rows:
        counts[layers.index(r["layer_index"]), labels.index(r["label"])] = r["n"]
        size[r["layer_index"]] = r["size"]
    totals = counts.sum(axis=1)
    return LayerShares(model, run, layers, [size[i] for i in layers], [int(t) for t in totals], labels,
                       counts / totals[:, None])


def classified_table(catalog: Catalog, run: str) -> list[dict]:
    """Table 1 rows (model, kernels, usable, classified_pct, null_classified_pct) of a run."""
    rows = report(catalog, run, "model").to_pylist()
    if not rows:
        raise CatalogError(f"run '{run}' has no embedded kernels to report")
    return rows


def models_table(catalog: Catalog) -> list[dict]:
    return run_query(catalog, """
        SELECT model, adapter, trained, n_layers, n_kernels, kernel_sizes FROM models ORDER BY model""").to_pylist()


def runs_table(catalog: Catalog) -> list[dict]:
    return run_query(catalog, """
        SELECT run, kind, parent, selection, params, created_at FROM runs ORDER BY created_at, run""").to_pylist()


def run_kernels_per_model(catalog: Catalog, run: str) -> dict[str, int]:
    rows = run_query(catalog, """
        SELECT k.model, count(*) AS n FROM labels l JOIN kernels k USING (kernel_id)
        WHERE l.run = ? AND l.cluster IS NOT NULL GROUP BY k.model""", [run]).to_pylist()
    return {r["model"]: r["n"] for r in rows}


def model_layers(catalog: Catalog, model: str, run: str) -> list[dict]:
    """Every depthwise layer of `model` with how many of its kernels the run clustered."""
    layers = run_query(catalog, """
        SELECT layer_index, layer, expert, kh || 'x' || kw AS size, n_kernels
        FROM layers WHERE model = ? ORDER BY layer_index, expert""", [model]).to_pylist()
    counts = run_query(catalog, """
        SELECT k.layer_index, count(*) AS n FROM labels l JOIN kernels k USING (kernel_id)
        WHERE l.run = ? AND l.cluster IS NOT NULL AND k.model = ? GROUP BY k.layer_index""", [run, model]).to_pylist()
    in_run = {r["layer_index"]: r["n"] for r in counts}
    for layer in layers:
        layer["in_run"] = in_run.get(layer["layer_index"], 0)
    return layers


def cluster_members(catalog: Catalog, run: str, kh: int, kw: int, cluster: int,
                    limit: int = 48, seed: int = 0) -> tuple[KernelSample, dict[str, int]]:
    """A seeded sample of a cluster's member kernels (grouped by model) and its count per model."""
    candidates = run_query(catalog, f"""
        SELECT k.kernel_id, k.model FROM labels l JOIN kernels k USING (kernel_id)
        WHERE l.run = ? AND l.kh = ? AND l.kw = ? AND l.cluster = ? ORDER BY {BASE_ORDER}""",
                           [run, kh, kw, cluster])
    models = candidates.column("model").to_pylist()
    per_model: dict[str, int] = {}
    for m in models:
        per_model[m] = per_model.get(m, 0) + 1
    positions = sample_positions(len(models), limit, seed)
    ids = [candidates.column("kernel_id")[int(i)].as_py() for i in positions]
    values = run_query(catalog, f"""
        SELECT k.kernel_id, k.model, k.kh, k.kw, k.weights FROM kernels k
        WHERE list_contains(?, k.kernel_id) ORDER BY {BASE_ORDER}""", [ids])
    kernels = _weights(values.column("weights"), values.column("kh").to_pylist(), values.column("kw").to_pylist())
    sample = KernelSample(kernels, values.column("model").to_pylist(), len(models), seed, limit,
                          sort_by="model", run=run, ids=values.column("kernel_id").to_pylist())
    return sample, dict(sorted(per_model.items(), key=lambda item: (-item[1], item[0])))
