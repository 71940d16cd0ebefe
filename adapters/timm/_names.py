"""timm model names: "arch" or "arch.tag", their pretrained configs, and fnmatch expansion.

timm is imported inside the functions: loading it takes a second or two, and listing the
adapters (or reading an ONNX file) should not pay for it.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from kernel_catalog.errors import CatalogError

_WILDCARDS = "*?["
# Config fields that are big or not about the weights' provenance.
_CFG_SKIP = {"state_dict", "label_names", "label_descriptions"}


@dataclass(frozen=True)
class TimmName:
    """A parsed source name: `arch` always, `tag` only when the user wrote one."""

    source: str
    arch: str
    tag: str | None

    @property
    def build_name(self) -> str:
        """What timm.create_model gets: the tag picks class count / input size of that release."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch


def parse_name(source: str) -> TimmName:
    """Split and check a timm name; CatalogError with suggestions when timm does not know it."""
    import timm

    arch, _, tag = source.partition(".")
    if not timm.is_model(arch):
        raise CatalogError(f"unknown timm model '{source}'{_suggest(arch, timm.list_models())}")
    if tag:
        tags = _tags_of(arch)
        if tag not in tags:
            known = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "none"
            raise CatalogError(f"unknown tag '{tag}' for timm model {arch} (known tags: {known})")
    return TimmName(source, arch, tag or None)


def _tags_of(arch: str) -> list[str]:
    import timm

    names = timm.list_models(arch, include_tags=True)
    return [n.partition(".")[2] for n in names if n.partition(".")[0] == arch and "." in n]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=5, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; see `timm.list_models()` for names"


def pretrained_cfg(name: TimmName) -> Any | None:
    """timm's PretrainedCfg for arch.tag (the default tag when none was given), or None."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name.build_name)


def cfg_to_json(cfg: Any) -> dict[str, Any]:
    """The JSON-safe fields of a PretrainedCfg (tag, hf_hub_id, license, num_classes, mean, ...)."""
    out: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if key in _CFG_SKIP:
            continue
        value = list(value) if isinstance(value, tuple) else value
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def list_timm_sources(patterns: list[str], pretrained: bool) -> list[str]:
    """Expand fnmatch patterns ('convnext*') into timm names, in order and without repeats.

    With pretrained=True only names with published weights come back, as arch.tag. A name
    without wildcards is checked and kept as written. A pattern that matches nothing is an error.
    """
    import timm

    found: dict[str, None] = {}
    for pattern in patterns:
        if not any(c in pattern for c in _WILDCARDS):
            found[parse_name(pattern).source] = None
            continue
        names = timm.list_models(pattern, pretrained=pretrained,
                                 include_tags=pretrained or "." in pattern)
        if not names:
            which = "pretrained timm model" if pretrained else "timm model"
            raise CatalogError(f"no {which} matches '{pattern}'")
        found.update(dict.fromkeys(names))
    return list(found)
