"""Publish a selection as a self-contained, read-only catalog: a folder, `s3://BUCKET/PREFIX` or
`hf://datasets/ORG/NAME` (a Hugging Face dataset repo, one commit).

What lands at the destination:

    kernels/model=<m>/<16 hex>-<8 hex>.parquet   the selected layers, sorted by layer, expert,
                                                 channel; one row group per layer (at most 64 k
                                                 rows), min/max statistics on the small columns
    results/run=<r>/...                          the result files of the runs named (and parents),
                                                 their rows restricted to the published kernels
    catalog.duckdb                               the metadata of exactly that selection, at the
                                                 current schema, with recorded sizes and SHA-256
    .kernel-catalog                              its marker (a catalog id of its own)
    README.md                                    the dataset card
    kernel-catalog-publish.json                  the manifest: every file's SHA-256 and size

`--where` picks layers: every layer with a kernel matching it is published whole, so the layer
metadata (counts, metrics) stays true. Everything is built in a local staging folder first, then
compared with the manifest at the destination: only files whose digest changed are uploaded
(the metadata snapshot by the digest of its rows: a DuckDB file is not byte-reproducible), the
manifest goes last, and files the previous publish listed but this one does not are removed
(never anything the manifest did not list). Publishing twice with nothing changed uploads
nothing; on the hub it makes no commit.

A run's result rows name kernels by id; a run over more than the selection would publish
embeddings and labels of kernels the publisher left out (another lab's models, say), so each
result table keeps only the published kernels' rows. Cluster summaries (mean kernels, counts)
stay as the run computed them: they describe the run, and a medoid outside the selection reads
as no medoid.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kernel_catalog.errors import CatalogError
from kernel_catalog.store._catalog import Catalog
from kernel_catalog.store._published import PUBLISH_MANIFEST
from kernel_catalog.store.datafs import file_sha256, kernel_file_path
from kernel_catalog.store.kernel_table import KERNEL_SCHEMA, PARQUET_OPTIONS

MANIFEST = PUBLISH_MANIFEST           # kernel-catalog-publish.json: what makes a folder read-only
CARD = "README.md"
SNAPSHOT = "catalog.duckdb"
MARKER = ".kernel-catalog"
ROW_GROUP_ROWS = 65_536
_WRITER_OPTIONS = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
CITATION = """@inproceedings{babaiee2024unveiling,
  title     = {Unveiling the Unseen: Identifiable Clusters in Trained Depthwise Convolutional Kernels},
  author    = {Babaiee, Zahra and Kiasari, Peyman M. and Rus, Daniela and Grosu, Radu},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024}
}"""


@dataclass
class PublishResult:
    """What a publish did: files uploaded (and their bytes), files already there, files removed."""

    dest: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes: int = 0
    models: int = 0
    kernels: int = 0
    commit: str | None = None      # the hub commit made (None: none needed, or not a hub repo)

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.deleted)


@dataclass
class _Staged:
    folder: Path
    files: dict[str, dict]          # relative path -> {"sha256", "bytes"}
    snapshot_content: str
    models: int
    kernels: int


def publish(store: Catalog, dest: str | os.PathLike, *, where: str | None = None, runs=(),
            wait: float = 10.0) -> PublishResult:
    from kernel_catalog.store._publish_targets import target_for

    dest_text = str(dest).rstrip("/") if "://" in str(dest) else str(Path(dest).absolute())
    target = target_for(dest_text, store)
    with tempfile.TemporaryDirectory(prefix="kc-publish-") as tmp:
        staged = _stage(store, Path(tmp), dest_text, where, tuple(runs), wait)
        result = target.sync(staged.folder, staged.files, staged.snapshot_content)
    result.models, result.kernels = staged.models, staged.kernels
    return result


# -- staging ----------------------------------------------------------------------------------
def _stage(store: Catalog, folder: Path, dest: str, where: str | None, runs: tuple[str, ...],
           wait: float) -> _Staged:
    with store.snapshot(wait=wait) as con:
        layers = _selected_layers(con, where)
        if not layers.num_rows:
            raise CatalogError("publish: the selection is empty (no kernel matches --where); nothing was published")
        chosen = _chosen_runs(con, runs)
        con.register("_kc_pub_layers", layers)
        models = sorted(set(layers.column("model").to_pylist()))
        kernel_rows, n_kernels = [], 0
        for model in models:
            row = _write_model(con, model, folder)
            kernel_rows.append(row)
            n_kernels += row["n_rows"]
        kernel_ids = con.sql("""SELECT k.kernel_id FROM kernels k JOIN _kc_pub_layers s ON s.model = k.model
                                 AND s.layer = k.layer AND coalesce(s.expert, -1) = coalesce(k.expert, -1)"""
                             ).to_arrow_table().column(0)
        result_rows = _copy_results(store, con, chosen, folder, kernel_ids)
        catalog_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{store.catalog_id}|{dest}"))
        content = _write_snapshot(con, folder / SNAPSHOT, models, chosen, kernel_rows, result_rows, catalog_id)
        licences = _licences(con, models)
        card_rows = con.execute("""
            SELECT m.model, sum(l.n_kernels)::BIGINT, m.source, m.adapter, m.trained,
                   coalesce(json_extract_string(m.meta, '$.hub.license'), json_extract_string(m.meta, '$.license'))
            FROM model_records m JOIN layer_records l USING (model)
            JOIN _kc_pub_layers s ON s.model = l.model AND s.layer = l.layer
                 AND coalesce(s.expert, -1) = coalesce(l.expert, -1)
            GROUP BY ALL ORDER BY 1""").fetchall()
        run_rows = con.execute("SELECT run, kind, parent, selection FROM run_records WHERE list_contains(?, run) "
                               "ORDER BY created_at, run", [list(chosen)]).fetchall()
        con.unregister("_kc_pub_layers")
    from kernel_catalog.store._owned import marker_text

    (folder / MARKER).write_text(marker_text(catalog_id))
    (folder / CARD).write_text(_card(dest, card_rows, run_rows, licences, where))
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            relative = path.relative_to(folder).as_posix()
            files[relative] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return _Staged(folder, files, content, len(models), n_kernels)


def _selected_layers(con: duckdb.DuckDBPyConnection, where: str | None) -> pa.Table:
    if where is None:
        sql = "SELECT DISTINCT model, layer, expert FROM layer_records"
    else:
        sql = f"SELECT DISTINCT model, layer, expert FROM kernels WHERE (\n{where.strip().rstrip(';')}\n)"
    try:
        return con.sql(sql + " ORDER BY ALL").to_arrow_table()
    except duckdb.Error as error:
        first = " ".join(str(error).split())[:200]
        raise CatalogError(f"publish --where {where!r}: {first}") from None


def _chosen_runs(con: duckdb.DuckDBPyConnection, runs: tuple[str, ...]) -> list[str]:
    """The runs named and the runs they read (a cluster run's embedding), in creation order."""
    parents = dict(con.execute("SELECT run, parent FROM run_records").fetchall())
    chosen: list[str] = []
    for run in runs:
        if run not in parents:
            raise CatalogError(f"publish --runs: no run '{run}' in the catalog (see `catalog runs`); nothing was published")
        while run is not None and run not in chosen:
            chosen.append(run)
            run = parents.get(run)
    return sorted(chosen)


def _write_model(con: duckdb.DuckDBPyConnection, model: str, folder: Path) -> dict:
    """One model's selected layers as one Parquet file, a row group per layer (split at 64 k rows)."""
    join = """FROM kernels k JOIN _kc_pub_layers s ON s.model = k.model AND s.layer = k.layer
              AND coalesce(s.expert, -1) = coalesce(k.expert, -1) WHERE k.model = ?"""
    order = "k.layer, coalesce(k.expert, -1)"
    columns = ", ".join(f"k.{name}" for name in KERNEL_SCHEMA.names)
    table = con.sql(f"SELECT {columns} {join} ORDER BY {order}, k.channel", params=[model]).to_arrow_table()
    table = table.cast(KERNEL_SCHEMA)
    counts = [row[0] for row in con.execute(f"SELECT count(*) {join} GROUP BY {order} ORDER BY {order}",
                                             [model]).fetchall()]
    checkpoint = table.column("checkpoint_sha256")[0].as_py()
    staging = folder / f".model-{hashlib.sha256(model.encode()).hexdigest()[:16]}.parquet"
    with pq.ParquetWriter(staging, KERNEL_SCHEMA, **_WRITER_OPTIONS) as writer:
        start = 0
        for count in counts:
            writer.write_table(table.slice(start, count), row_group_size=ROW_GROUP_ROWS)
            start += count
    digest = file_sha256(staging)
    relative = f"{kernel_file_path(model, checkpoint).rpartition('-')[0]}-{digest[:8]}.parquet"
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder / relative)
    return {"model": model, "path": relative, "n_rows": table.num_rows,
            "bytes": (folder / relative).stat().st_size, "sha256": digest}


def _copy_results(store: Catalog, con: duckdb.DuckDBPyConnection, runs: list[str], folder: Path,
                  kernel_ids: pa.ChunkedArray) -> list[dict]:
    """Copy the runs' result files; a Parquet table with rows of unpublished kernels is rewritten
    with the published kernels' rows only (a file that has none of them is copied as it is)."""
    rows = con.execute("SELECT run, kind, path, n_rows FROM result_files WHERE list_contains(?, run) ORDER BY path",
                       [runs]).fetchall()
    copied = []
    for run, kind, path, n_rows in rows:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        source = store.data.local_path(path)
        kept = _published_rows(source, kernel_ids) if path.endswith(".parquet") else None
        if kept is None:
            shutil.copyfile(source, target)
        else:
            pq.write_table(kept, target, compression="zstd")
            n_rows = kept.num_rows
        copied.append({"run": run, "kind": kind, "path": path, "n_rows": n_rows,
                       "bytes": target.stat().st_size, "sha256": file_sha256(target)})
    return copied


def _published_rows(path: Path, kernel_ids: pa.ChunkedArray) -> pa.Table | None:
    """The table's rows of published kernels, or None when every row is one (copy it whole)."""
    table = pq.read_table(path)
    if "kernel_id" not in table.column_names:
        return None
    keep = pc.is_in(table.column("kernel_id"), value_set=kernel_ids.combine_chunks())
    return None if pc.all(keep).as_py() else table.filter(keep)


def _write_snapshot(con: duckdb.DuckDBPyConnection, path: Path, models: list[str], runs: list[str],
                    kernel_rows: list[dict], result_rows: list[dict], catalog_id: str) -> str:
    """catalog.duckdb with exactly the selection, built by this code's migrations at head; returns
    the digest of its rows (what decides whether the published snapshot changed)."""
    from kernel_catalog.store._migrate import upgrade

    selected = ("JOIN _kc_pub_layers s ON s.model = t.model AND s.layer = t.layer "
                "AND coalesce(s.expert, -1) = coalesce(t.expert, -1)")
    sources = {
        "model_records": """SELECT t.* REPLACE (c.n_layers::INTEGER AS n_layers, c.n_kernels::BIGINT AS n_kernels)
                            FROM model_records t JOIN (SELECT t.model, count(*) AS n_layers, sum(t.n_kernels) AS n_kernels
                            FROM layer_records t """ + selected + " GROUP BY ALL) c USING (model)",
        "layer_records": "SELECT t.* FROM layer_records t " + selected,
        "ingest_log": "SELECT * FROM ingest_log WHERE list_contains($models, model)",
        "run_records": "SELECT * FROM run_records WHERE list_contains($runs, run)",
        "cluster_records": "SELECT * FROM cluster_records WHERE list_contains($runs, run)",
        "settings": "SELECT 'catalog_id' AS key, $catalog_id AS value",
        "kernel_files": None,
        "result_files": None,
        "schema_version": None,
    }
    made = {"kernel_files": pa.Table.from_pylist(kernel_rows), "result_files": pa.Table.from_pylist(
        result_rows, schema=pa.schema([("run", pa.string()), ("kind", pa.string()), ("path", pa.string()),
                                       ("n_rows", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())]))}
    params = {"models": models, "runs": runs, "catalog_id": catalog_id}
    out = duckdb.connect(str(path))
    try:
        upgrade(out)
        names = [row[0] for row in out.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal "
                                               "ORDER BY table_name").fetchall()]
        digest = hashlib.sha256()
        for name in names:
            if name == "schema_version":
                continue
            if name in made:
                rows = made[name]
            else:
                sql = sources.get(name, f'SELECT * FROM "{name}"')    # a table added later: copied whole
                used = {k: v for k, v in params.items() if f"${k}" in sql}
                rows = con.sql(sql, params=used).to_arrow_table()
            out.execute(f'DELETE FROM "{name}"')            # (settings: the migration's own catalog_id)
            out.register("_rows", rows)
            out.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _rows')
            out.unregister("_rows")
            dumped = out.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall()
            digest.update(f"{name}\0{json.dumps(dumped, default=str)}\0".encode())
        out.execute("CHECKPOINT")
    finally:
        out.close()
    return digest.hexdigest()


def _licences(con: duckdb.DuckDBPyConnection, models: list[str]) -> list[str]:
    rows = con.execute("""SELECT DISTINCT coalesce(json_extract_string(meta, '$.hub.license'),
                                                   json_extract_string(meta, '$.license'))
                          FROM model_records WHERE list_contains(?, model)""", [models]).fetchall()
    return sorted({row[0] for row in rows if row[0]})


def _card(dest: str, models: list[tuple], runs: list[tuple], licences: list[str], where: str | None) -> str:
    """The dataset card: a YAML header (licences, tags, the Parquet as the default config), the
    models with their kernel counts and sources, how to open it, what to cite."""
    yaml = ["---"]
    if not licences:
        yaml.append("license: unknown")
    elif len(licences) == 1:
        yaml.append(f"license: {json.dumps(licences[0])}")
    else:
        yaml += ["license:"] + [f"- {json.dumps(name)}" for name in licences]
    yaml += ["tags:", "- depthwise-convolution", "- convolution-kernels", "- kernel-catalog",
             "configs:", "- config_name: kernels", "  data_files: \"kernels/**/*.parquet\"", "---"]
    total = sum(row[1] for row in models)
    lines = yaml + [
        "", "# Depthwise convolution kernels", "",
        f"{total:,} trained depthwise convolution kernels of {len(models)} model(s), published by "
        "kernel-catalog as a read-only catalog: Parquet (one file per model, sorted by "
        "layer and channel, a row group per layer) and a DuckDB snapshot of the metadata.",
        "",
        f"Selection: `{where}`." if where else "Selection: every kernel of these models.",
        "", "## Models", "", "| model | kernels | source | adapter | trained | license |", "|---|---:|---|---|---|---|",
    ]
    for model, n, source, adapter, trained, licence in models:
        lines.append(f"| {_cell(model)} | {n:,} | {_cell(source or '')} | {_cell(adapter)} | "
                     f"{'yes' if trained else 'no'} | {_cell(licence or 'not stated')} |")
    if runs:
        lines += ["", "## Analysis runs", "", "Their result rows (embeddings, labels) are those of the kernels published "
                  "here; cluster summaries are the run's own.", "",
                  "| run | kind | parent | selection |", "|---|---|---|---|"]
        lines += [f"| {_cell(r)} | {k} | {_cell(p or '')} | {_cell(s or '')} |" for r, k, p, s in runs]
    lines += [
        "", "## Open it", "",
        "With [kernel-catalog](https://pypi.org/project/kernel-catalog/) (read-only; each query fetches only "
        "the files, row groups and columns it needs):", "",
        "```",
        f"catalog --catalog {dest} models",
        f"catalog --catalog {dest} sql \"SELECT model, layer, count(*) FROM kernels GROUP BY ALL\"",
        "```", "",
        "```",
        "import kernel_catalog as kc",
        f"cat = kc.open({dest!r})",
        "cat.models()",
        "```", "",
        "Or read `kernels/**/*.parquet` with any Parquet reader (DuckDB, pandas, Polars, Spark).", "",
        "## Cite", "",
        "Babaiee et al., ICLR 2024, \"Unveiling the Unseen: Identifiable Clusters in Trained Depthwise "
        "Convolutional Kernels\":", "",
        "```bibtex", CITATION, "```", "",
        "Each model's weights remain under the license its authors state (table above).", "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
