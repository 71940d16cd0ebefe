"""`catalog gallery`: a static HTML site of a cluster run, opened straight from disk (file://).

    <out>/index.html               models (kernel counts), runs (kind, parameters), Table 1, clusters
    <out>/models/<model>.html      its layers: stacked cluster shares (image) and a table
    <out>/clusters/<KxK>-c<N>.html prototype (mean kernel) and medoid, name, template, score, share,
                                   a seeded sample of member kernels across models, counts per model
    <out>/img/*.png                every image, linked relatively

Plain HTML5 and PNG, no script, no server. The site is written into a temporary folder beside
the target and renamed into place at the end, so a failure leaves no half-written site; an
existing non-empty target is refused unless `force`.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

from kernel_catalog.report import figures as fg
from kernel_catalog.report import _figures_data as data
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.targets import mark_output_folder, output_folder
from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN
from kernel_catalog.analysis.runs import require_run
from kernel_catalog.store import Catalog

GALLERY_DPI = 150
MEMBERS = 48

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 62rem;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: left; vertical-align: middle; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
img.thumb { width: 7rem; height: auto; }
code { font-size: 0.8rem; word-break: break-all; }
nav { font-size: 0.9rem; margin-bottom: 1rem; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: -0.05em; }
.note { color: #555; font-size: 0.9rem; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def slug(name: str) -> str:
    """A file name for any model name (unsafe characters replaced, a hash keeps it unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "model"
    if safe == name:
        return safe
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def cluster_page(cluster: dict) -> str:
    return f"{cluster['kh']}x{cluster['kw']}-c{cluster['cluster']}"


def _page(title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    nav = "" if depth == 0 else f'<nav><a href="{up}index.html">&larr; gallery index</a></nav>\n'
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{_e(title)}</title>\n<link rel="icon" href="data:,">\n<style>{CSS}</style>\n</head>\n'
            f'<body>\n{nav}<h1>{_e(title)}</h1>\n{body}\n</body>\n</html>\n')


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), raw: set[int] = frozenset()) -> str:
    """An HTML table; cells are escaped unless their column is in `raw` (already HTML)."""
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = "\n".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{v if i in raw else _e(v)}</td>'
                         for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _img(src: str, alt: str, cls: str = "figure") -> str:
    return f'<img class="{cls}" src="{_e(src)}" alt="{_e(alt)}">'


def _swatch(label: str) -> str:
    return f'<span class="swatch" style="background:{fg.label_color(label)}"></span>{_e(label)}'


def _pct(value) -> str:
    return "" if value is None else f"{value:.1f}"


def _check_target(target: Path, force: bool) -> None:
    output_folder(target, force)      # the -o rule: --force replaces only a gallery this tool wrote


def write_gallery(catalog: Catalog, run: str, out_dir: str | os.PathLike, force: bool = False,
                  seed: int = 0, members: int = MEMBERS, echo: Callable[[str], None] = lambda line: None) -> dict:
    """Write the gallery of cluster run `run` into `out_dir`; returns a summary (pages, images)."""
    target = Path(out_dir).absolute()
    _check_target(target, force)
    require_run(catalog, run, "cluster")
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        staging.mkdir()
        mark_output_folder(staging)
        summary = _build(catalog, run, staging, seed, members, echo)
        _swap_into_place(staging, target, force)
    except OSError as error:
        raise CatalogError(f"{target}: cannot write the gallery ({error.strerror or error})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {**summary, "path": str(target)}


def _swap_into_place(staging: Path, target: Path, force: bool) -> None:
    _check_target(target, force)                 # again: another process may have written there
    if not target.exists():
        os.rename(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.rename(staging, target)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _build(catalog: Catalog, run: str, root: Path, seed: int, members: int, echo) -> dict:
    for folder in ("img", "models", "clusters"):
        (root / folder).mkdir()
    record = require_run(catalog, run, "cluster")
    models = data.models_table(catalog)
    runs = data.runs_table(catalog)
    clusters = data.cluster_prototypes(catalog, run)
    table1 = data.classified_table(catalog, run)
    in_run = data.run_kernels_per_model(catalog, run)
    images = 0

    def save(fig, name: str, title: str) -> str:
        nonlocal images
        fg.save_figure(fig, root / "img" / name, title=title, dpi=GALLERY_DPI, durable=False)
        images += 1
        return f"img/{name}"

    echo(f"gallery of run {run}: {len(models)} models, {len(clusters)} clusters")
    classified_img = save(fg.draw_classified(table1, title=f"Classified kernels per model, run {run}"),
                          "classified.png", "Table 1")
    overview_img = save(fg.draw_clusters(clusters, "per-kernel", title=f"Clusters of run {run}"), "clusters.png",
                        "clusters")

    # one page per cluster
    for cluster in clusters:
        name = cluster_page(cluster)
        proto = save(fg.draw_clusters([cluster], ncols=1, width=2.2), f"cluster-{name}.png", f"cluster {name}")
        cluster["_img"] = save(fg.draw_thumbnail(cluster["mean"], cluster["medoid"]), f"thumb-{name}.png",
                               f"cluster {name}")
        sample, per_model = data.cluster_members(catalog, run, cluster["kh"], cluster["kw"], cluster["cluster"],
                                                 members, seed)
        member_img = save(fg.draw_kernel_grid(sample.kernels, sample.groups, "per-kernel",
                                              caption=fg.kernels_caption(sample) + ", grouped by model"),
                          f"members-{name}.png", f"members of cluster {name}")
        (root / "clusters" / f"{name}.html").write_text(
            _cluster_html(run, cluster, proto, member_img, sample, per_model), encoding="utf-8")

    # one page per model
    for model in models:
        shares = None
        if in_run.get(model["model"]):
            shares = data.layer_shares(catalog, run, model["model"])
            model["_img"] = save(fg.draw_layer_shares(shares), f"layers-{slug(model['model'])}.png",
                                 f"layers of {model['model']}")
        layers = data.model_layers(catalog, model["model"], run)
        (root / "models" / f"{slug(model['model'])}.html").write_text(
            _model_html(run, model, layers, shares), encoding="utf-8")

    (root / "index.html").write_text(
        _index_html(run, record, models, runs, in_run, table1, clusters, classified_img, overview_img),
        encoding="utf-8")
    return {"pages": 1 + len(models) + len(clusters), "images": images}


def _index_html(run, record, models, runs, in_run, table1, clusters, classified_img, overview_img) -> str:
    model_rows = [[f'<a href="models/{_e(slug(m["model"]))}.html">{_e(m["model"])}</a>', _e(m["adapter"]),
                   "yes" if m["trained"] else "no", m["n_layers"], m["n_kernels"],
                   _e(", ".join(m["kernel_sizes"] or [])), in_run.get(m["model"], 0)] for m in models]
    run_rows = [[("<strong>" + _e(r["run"]) + "</strong>") if r["run"] == run else _e(r["run"]), _e(r["kind"]),
                 _e(r["parent"]), f"<code>{_e(r['selection'])}</code>",
                 f"<code>{_e(json.dumps(json.loads(r['params']), sort_keys=True) if r['params'] else '')}</code>",
                 _e(r["created_at"])] for r in runs]
    t1_rows = [[r["model"], r["kernels"], r["usable"], _pct(r["classified_pct"]), _pct(r["null_classified_pct"])]
               for r in table1]
    cluster_rows = [[f'<a href="clusters/{cluster_page(c)}.html">{_img(c["_img"], cluster_page(c), "thumb")}</a>',
                     f'{c["kh"]}x{c["kw"]}', f'<a href="clusters/{cluster_page(c)}.html">#{c["cluster"]}</a>',
                     _swatch(c["label"]), _e(c["template"]), f'{c["score"]:.3f}', _margin(c), _clear(c),
                     c["n_kernels"], f'{100 * c["share"]:.1f}'] for c in clusters]
    body = (
        f'<p class="note">Run <strong>{_e(run)}</strong> (cluster run of embed run {_e(record.parent)}), '
        f'selection <code>{_e(record.selection)}</code>. Static pages written by <code>catalog gallery</code>.</p>\n'
        "<h2>Models</h2>\n"
        + _table(["model", "adapter", "trained", "layers", "kernels", "sizes", f"clustered in {run}"], model_rows,
                 numeric={3, 4, 6}, raw={0, 1, 5})
        + "\n<h2>Runs</h2>\n"
        + _table(["run", "kind", "parent", "selection", "params", "created"], run_rows, raw={0, 1, 2, 3, 4, 5})
        + "\n<h2>Classified vs the null model (Table 1)</h2>\n" + _img(classified_img, "classified % per model")
        + _table(["model", "kernels", "usable", "classified %", "null classified %"], t1_rows, numeric={1, 2, 3, 4})
        + "\n<h2>Clusters</h2>\n" + _img(overview_img, "cluster prototypes")
        + '<p class="note">Prototype (mean kernel) and medoid of each cluster, each scaled to its own max |w|; '
          "names are the best-matching template family (cosine), <em>unmatched</em> below the threshold, "
          f"<em>a|b</em> when the margin to the next family is below {AMBIGUOUS_MARGIN}; <em>clear %</em>: "
          "its kernels whose own name wins by that margin.</p>\n"
        + _table(["prototype | medoid", "size", "cluster", "name", "template", "score", "margin", "clear %", "kernels",
                  "share %"], cluster_rows, numeric={5, 6, 7, 8, 9}, raw={0, 2, 3, 4})
    )
    return _page(f"Kernel Catalog gallery: run {run}", body)


def _model_html(run: str, model: dict, layers: list[dict], shares: data.LayerShares | None) -> str:
    labels = shares.labels if shares else []
    share_of = {}
    if shares:
        for i, layer_index in enumerate(shares.layer_index):
            share_of[layer_index] = shares.shares[i]
    rows = []
    for layer in layers:
        values = share_of.get(layer["layer_index"])
        rows.append([layer["layer_index"], layer["layer"], "" if layer["expert"] is None else layer["expert"],
                     layer["size"], layer["n_kernels"], layer["in_run"]]
                    + [("" if values is None else f"{100 * values[j]:.1f}") for j in range(len(labels))])
    meta = (f'<p class="note">{model["n_layers"]} depthwise layers, {model["n_kernels"]} kernels '
            f'({_e(", ".join(model["kernel_sizes"] or []))}), adapter {_e(model["adapter"])}, '
            f'{"trained" if model["trained"] else "untrained (random init)"}.</p>\n')
    if shares:
        figure = (f"<h2>Cluster shares per layer (run {_e(run)})</h2>\n"
                  + _img("../" + model["_img"], f"cluster shares per layer of {model['model']}"))
    else:
        figure = f'<p class="note">No kernel of this model was clustered in run {_e(run)}.</p>\n'
    headers = ["layer_index", "layer", "expert", "size", "kernels", f"in {run}"] + [f"{label} %" for label in labels]
    numeric = {0, 2, 4, 5} | set(range(6, 6 + len(labels)))
    return _page(f"Model {model['model']}", meta + figure + "\n<h2>Layers</h2>\n" + _table(headers, rows, numeric), 1)


def _margin(cluster: dict) -> str:
    return "" if cluster.get("margin") is None else f'{cluster["margin"]:.3f}'


def _clear(cluster: dict) -> str:
    return "" if cluster.get("clear_share") is None else f'{100 * cluster["clear_share"]:.1f}'


def _cluster_html(run: str, cluster: dict, proto: str, member_img: str, sample: data.KernelSample,
                  per_model: dict[str, int]) -> str:
    medoid = ("none" if cluster["medoid_kernel_id"] in (None, -1) or cluster.get("medoid_model") is None else
              f'{cluster["medoid_kernel_id"]} ({_e(cluster["medoid_model"])}, layer {cluster["medoid_layer_index"]}, '
              f'channel {cluster["medoid_channel"]})')
    facts = _table(["", ""], [
        ["name", _swatch(cluster["label"])], ["template", _e(cluster["template"])],
        ["score (cos of the mean kernel to the template)", f'{cluster["score"]:.3f}'],
        ["margin (score minus the next family's best cosine)", _margin(cluster)],
        [f"clear calls (its kernels whose own name wins by {AMBIGUOUS_MARGIN})", _clear(cluster) + " %"],
        ["kernel size", f'{cluster["kh"]}x{cluster["kw"]}'], ["kernels", cluster["n_kernels"]],
        ["share of its size", f'{100 * cluster["share"]:.1f} %'], ["medoid kernel_id", medoid],
    ], raw={1})
    counts = _table(["model", "kernels in this cluster"],
                    [[f'<a href="../models/{_e(slug(m))}.html">{_e(m)}</a>', n] for m, n in per_model.items()],
                    numeric={1}, raw={0})
    body = (f'<p class="note">Cluster #{cluster["cluster"]} of the {cluster["kh"]}x{cluster["kw"]} kernels of run '
            f'{_e(run)}.</p>\n<h2>Prototype (mean kernel, left) and medoid (right)</h2>\n'
            + _img("../" + proto, "prototype and medoid") + facts
            + f"\n<h2>Member kernels across models</h2>\n<p class=\"note\">{_e(fg.kernels_caption(sample))}; "
              "grouped by model, each kernel scaled to its own max |w|.</p>\n"
            + _img("../" + member_img, "sample of member kernels") + counts)
    return _page(f"Cluster {cluster['kh']}x{cluster['kw']} #{cluster['cluster']}: {cluster['label']}", body, 1)
