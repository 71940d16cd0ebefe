"""Ranged reads of a safetensors file over HTTP: its header, then only the tensors asked for.

A safetensors file is 8 bytes (little-endian u64: the header's length N), N bytes of JSON (tensor
name -> dtype, shape, data_offsets relative to the end of the header), then the tensors' bytes.
Opening a `RemoteSafetensors` costs one Range request for the first FIRST_READ bytes (the length and
the header; a second request only for a header longer than that); `fetch(names)`
then asks only for those tensors' bytes, nearby spans coalesced (gaps up to COALESCE_GAP read
through), WORKERS requests in flight. huggingface_hub's HTTP session does the transfer, so its
settings apply (the client factory: proxies, certificates; HF_TOKEN in the headers the caller
builds); the caller's URL names a commit, so the header and every range come from one revision,
and a response whose ETag or size differs from the first one's is refused.

The header is data from elsewhere (ARCHITECTURE.md, "Trust boundaries"), checked the way the
safetensors library checks a file before anything is allocated: a length within MAX_HEADER and
within the size the server states (Content-Range), known dtypes, non-negative shapes, byte spans
equal to elements x dtype size, spans contiguous from the start of the data to the end of the
file. A refusal is one CatalogError line.

A dropped connection asks again for the bytes still missing (up to RETRIES tries in a row without
progress). `FullDownloadNeeded` tells the caller to download the whole file instead: the server
answered a Range request with the whole body (200), or a tensor has a dtype read here cannot decode.
`fetched` counts the body bytes received.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kernel_catalog.adapters._untrusted import AGAIN
from kernel_catalog.errors import CatalogError

FORCE_ENV = "KERNEL_CATALOG_FULL_DOWNLOAD"   # "1": every ingest downloads whole files (full_download=True)
SUFFIXES = (".safetensors",)
COALESCE_GAP = 64 << 10         # read through a gap this small rather than open another request
MAX_REQUEST = 16 << 20          # split longer spans: parallel requests, a retry repeats less
FIRST_READ = 64 << 10           # the first request: the header's length and, mostly, the header
WORKERS = 16
RETRIES = 5
MAX_HEADER = 100_000_000        # the safetensors library's own limit
_TRUE = {"1", "on", "yes", "true"}
# Bits per element of every safetensors dtype; the ones torch decodes exactly, by torch's name.
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
         "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64,
         "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class FullDownloadNeeded(Exception):
    """A ranged read is not possible here: download the whole file the usual way."""


class _Retry(Exception):
    """A response worth asking again for (5xx, 429, a body cut short)."""


@dataclass(frozen=True)
class TensorSpan:
    dtype: str
    shape: tuple[int, ...]
    start: int          # absolute byte offsets in the file
    stop: int


def ranged_allowed(full_download: bool) -> bool:
    """Ranged reads unless the caller (IngestOptions.full_download) or FORCE_ENV asks for whole files."""
    return not full_download and os.environ.get(FORCE_ENV, "").strip().lower() not in _TRUE


def depthwise_candidates(tensors: dict[str, TensorSpan]) -> list[str]:
    """Tensors that may be depthwise kernels by shape alone: float (C,1,kh,kw), C > 1, kh*kw > 1
    (the state-dict rule; every spatial depthwise Conv2d weight of a timm model has this shape)."""
    from kernel_catalog.adapters.statedict import is_depthwise_shape

    return [name for name, t in tensors.items()
            if is_depthwise_shape(t.shape, t.dtype.startswith("F") or t.dtype == "BF16")]


class RemoteSafetensors:
    """One safetensors file at `url`: header read on open, tensors fetched by byte ranges on demand.

    `where` names the file in messages; `on_error` turns a transfer failure (after the retries) into
    the caller's one-line CatalogError; `timeout` bounds each request (seconds).
    """

    def __init__(self, url: str, headers: dict[str, str], where: str,
                 on_error: Callable[[Exception], CatalogError], timeout: float) -> None:
        if sys.byteorder != "little":
            raise FullDownloadNeeded("big-endian host")
        self.url, self.where, self.timeout = url, where, timeout
        self._on_error = on_error
        self._headers = {**headers, "Accept-Encoding": "identity"}   # byte ranges of the file itself
        self.size: int | None = None
        self.etag: str | None = None
        self.fetched = 0
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}
        self._bar: Any = None
        head = self._transfer(0, FIRST_READ)      # the length and (mostly) the whole header at once
        assert self.size is not None
        if len(head) < 8:
            raise CatalogError(f"{where}: shorter than the 8 bytes a safetensors file starts with; {AGAIN}")
        length = struct.unpack("<Q", head[:8])[0]
        if length > MAX_HEADER or 8 + length > self.size:
            raise CatalogError(f"{where}: its header claims {length} bytes, beyond the {self.size} bytes of the file"
                               f" (or the {MAX_HEADER} a header may have); {AGAIN}")
        self.data_start = 8 + length
        raw = head[8:self.data_start]
        if self.data_start > len(head):           # a longer header: its rest in a second request
            raw += self._transfer(len(head), self.data_start)
        self.tensors, self.metadata = parse_header(raw, self.size - self.data_start, self.data_start, where)

    def fetch(self, names: Iterable[str]) -> None:
        """Fetch the bytes of these tensors (those not fetched yet): coalesced spans, in parallel."""
        todo = [n for n in dict.fromkeys(names) if n not in self._data]
        for name in todo:
            if self.tensors[name].dtype not in _TORCH:
                raise FullDownloadNeeded(f"{name}: dtype {self.tensors[name].dtype}")
        groups = _coalesce(sorted((self.tensors[n].start, self.tensors[n].stop) for n in todo
                                  if self.tensors[n].stop > self.tensors[n].start))
        parts = [_split(g) for g in groups]
        blobs: list[bytes] = []
        if groups:
            flat = [part for group in parts for part in group]
            self._bar = _progress(sum(b - a for a, b in flat), self.where)
            try:
                with ThreadPoolExecutor(max_workers=min(WORKERS, len(flat)), thread_name_prefix="range") as pool:
                    done = iter(pool.map(lambda span: self._transfer(*span), flat))
                    blobs = [b"".join(next(done) for _ in group) for group in parts]
            finally:
                if self._bar is not None:
                    self._bar.close()
                self._bar = None
        starts = [a for a, _ in groups]
        for name in todo:
            t = self.tensors[name]
            if t.stop == t.start:
                self._data[name] = b""
                continue
            i = bisect.bisect_right(starts, t.start) - 1
            offset = t.start - groups[i][0]
            self._data[name] = blobs[i][offset:offset + t.stop - t.start]

    def get(self, name: str):
        """The tensor `name` as torch holds it (fetched now when it was not), values bit for bit."""
        import torch

        if name not in self._data:
            self.fetch([name])
        t = self.tensors[name]
        dtype = getattr(torch, _TORCH[t.dtype])
        if not self._data[name]:
            return torch.empty(t.shape, dtype=dtype)
        return torch.frombuffer(bytearray(self._data[name]), dtype=dtype).reshape(t.shape)

    def release(self) -> None:
        """Forget the fetched bytes (the counts stay)."""
        self._data.clear()

    # -- transfer ---------------------------------------------------------------------------------

    def _transfer(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the file; a dropped or short response asks again for the rest."""
        try:
            return self._get(start, stop)
        except (CatalogError, FullDownloadNeeded):
            raise
        except Exception as exc:  # noqa: BLE001 -- network and HTTP failures, after the retries
            raise self._on_error(exc) from None

    def _get(self, start: int, stop: int) -> bytes:
        import httpx2
        from huggingface_hub.utils import get_session

        got = bytearray()
        idle, wait = 0, 0.25
        while start + len(got) < stop:
            at, before = start + len(got), len(got)
            try:
                with get_session().stream("GET", self.url, headers={**self._headers, "Range": f"bytes={at}-{stop - 1}"},
                                          timeout=self.timeout) as response:
                    last = self._check(response, at, stop)
                    stop = min(stop, self.size)     # the first read may ask beyond the end of a short file
                    for chunk in response.iter_bytes():
                        if at + len(got) - before + len(chunk) > last + 1:
                            raise CatalogError(f"{self.where}: the server sent more bytes than the range it"
                                               f" announced ({at}-{last}); {AGAIN}")
                        got += chunk
                        self._count(len(chunk))
            except (httpx2.TransportError, _Retry) as exc:
                if len(got) == before:
                    idle += 1
                    if idle > RETRIES:
                        raise (exc.__cause__ or exc) if isinstance(exc, _Retry) else exc
                    time.sleep(wait)
                    wait = min(8.0, wait * 2)
                else:
                    idle, wait = 0, 0.25
        return bytes(got)

    def _check(self, response: Any, at: int, stop: int) -> int:
        """The last byte this 206 response carries; else _Retry / FullDownloadNeeded / an error."""
        from huggingface_hub.utils import hf_raise_for_status

        status = response.status_code
        if status == 200:
            raise FullDownloadNeeded("the server ignores Range requests")
        if status in (408, 429, 500, 502, 503, 504):
            response.read()
            try:
                hf_raise_for_status(response)
            except Exception as exc:  # noqa: BLE001 -- kept as the reason if the retries run out
                raise _Retry(status) from exc
            raise _Retry(status)
        if status == 416 and self.size is None:
            raise CatalogError(f"{self.where}: shorter than the 8 bytes a safetensors file starts with; {AGAIN}")
        if status != 206:
            response.read()
            hf_raise_for_status(response)
            raise CatalogError(f"{self.where}: the server answered HTTP {status} to a Range request")
        first, last, total = _content_range(response.headers.get("Content-Range", ""))
        if first != at or last < at or last > stop - 1 or total is None or last >= total:
            raise CatalogError(f"{self.where}: the server answered bytes {at}-{stop - 1} with"
                               f" '{response.headers.get('Content-Range')}'; {AGAIN}")
        etag = response.headers.get("ETag")
        with self._lock:
            if self.size is None:
                self.size, self.etag = total, etag
            elif total != self.size or (etag and self.etag and etag != self.etag):
                raise CatalogError(f"{self.where}: the file changed between two requests (size or ETag);"
                                   " run again")
        return last

    def _count(self, n: int) -> None:
        with self._lock:
            self.fetched += n
            if self._bar is not None:
                self._bar.update(n)


def parse_header(raw: bytes, data_size: int, data_start: int, where: str
                 ) -> tuple[dict[str, TensorSpan], dict[str, str] | None]:
    """(tensors by name, in the header's order; __metadata__) of a safetensors header, checked
    against the `data_size` bytes that follow it; one CatalogError line when it does not hold."""
    def refuse(why: str) -> CatalogError:
        return CatalogError(f"{where}: not a readable safetensors file ({why}); {AGAIN}")

    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise refuse("__metadata__ is not a map of strings")
    tensors: dict[str, TensorSpan] = {}
    unknown = None
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise refuse(f"'{name[:80]}' is not a tensor entry")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list)
                or len(offsets) != 2 or not all(_is_int(x) for x in [*shape, *offsets])):
            raise refuse(f"'{name[:80]}' lacks a dtype, an integer shape or two data offsets")
        if any(d < 0 for d in shape):
            raise refuse(f"'{name[:80]}' has shape {shape} (a negative dimension)")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise refuse(f"'{name[:80]}' spans bytes {begin}..{end}, beyond the {data_size} bytes of data")
        bits = _BITS.get(dtype)
        if bits is None:
            unknown = dtype
        else:
            needed = math.prod(shape) * bits
            if needed % 8 or needed // 8 != end - begin:
                raise refuse(f"'{name[:80]}': its shape {shape} and dtype {dtype} need {needed / 8:g} bytes,"
                             f" the file gives {end - begin}")
        tensors[name] = TensorSpan(dtype, tuple(shape), data_start + begin, data_start + end)
    position = data_start
    for span in sorted(tensors.values(), key=lambda t: (t.start, t.stop)):
        if span.start != position:
            raise refuse("tensor data overlaps or leaves gaps")
        position = span.stop
    if position != data_start + data_size:
        raise refuse(f"the tensors end at byte {position}, the file at {data_start + data_size}")
    if unknown is not None:
        raise FullDownloadNeeded(f"dtype {unknown}")      # let the safetensors library judge it
    return tensors, metadata


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _content_range(value: str) -> tuple[int, int, int | None]:
    """(first, last, total) of 'bytes FIRST-LAST/TOTAL'; (-1, -1, None) when malformed."""
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        if unit != "bytes":
            raise ValueError
        return int(first), int(last), (None if total == "*" else int(total))
    except ValueError:
        return -1, -1, None


def _coalesce(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a - merged[-1][1] <= COALESCE_GAP:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _split(group: tuple[int, int]) -> list[tuple[int, int]]:
    start, stop = group
    return [(a, min(stop, a + MAX_REQUEST)) for a in range(start, stop, MAX_REQUEST)]


def _progress(total: int, where: str):
    """A byte-counting bar on a terminal (as huggingface_hub shows for a download); None elsewhere."""
    from huggingface_hub.utils import are_progress_bars_disabled

    if not sys.stderr.isatty() or are_progress_bars_disabled():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=where.rsplit("/", 1)[-1][:40],
                leave=False)
