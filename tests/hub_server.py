"""A small local server speaking the Hugging Face hub's download protocol, for tests and the bench.

huggingface_hub's real client talks to it through HF_ENDPOINT. Routes (what the client uses):
  HEAD/GET /{org}/{repo}/resolve/{revision}/{path}   ETag, X-Repo-Commit, Content-Length; Range
  GET /api/models/{org}/{repo}[/revision/{revision}]  JSON: id, sha, siblings (size, lfs sha256), license
  GET /api/models/{org}/{repo}/tree/{revision}        JSON list of files
  GET /files/{name}                                   plain URL downloads (timm's cfg.url configs)
Dataset repos (`add("datasets/ORG/NAME", ...)`, or created by the client) answer the same routes under
/datasets/{org}/{repo}/resolve/... and /api/datasets/{org}/{repo}/..., plus what huggingface_hub's
upload uses (HF_HUB_DISABLE_XET: the LFS path) and HfFileSystem reads:
  POST /api/repos/create                              JSON {name, organization, type}; 409 if it exists
  POST /api/validate-yaml                             a README.md's YAML header: no errors
  POST /api/datasets/{org}/{repo}/paths-info/{rev}    form paths=...: file / directory entries
  GET  /api/datasets/{org}/{repo}/tree/{rev}[/{path}] ?recursive=: the entries under path
  POST /api/datasets/{org}/{repo}/preupload/{rev}     JSON files -> uploadMode (lfs for binaries)
  POST /datasets/{org}/{repo}.git/info/lfs/objects/batch   upload actions (none for a stored oid)
  PUT  /lfs-upload/{oid}                              the object's bytes (sha256 checked)
  POST /api/datasets/{org}/{repo}/commit/{rev}        NDJSON header/file/lfsFile/deletedFile: a new commit
`commits` lists (repo, commit) of every commit made; `uploads` the oids PUT.
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) as the hub does.

Range requests (`bytes=A-B`, `bytes=A-`) are answered 206 with Content-Range, as the hub and its CDN
do; with `ignore_ranges = True` every GET answers 200 with the whole body (a server or proxy that
does not do ranges). `served` counts the body bytes written per request path.

For tests of failure: `cut(path, after)` makes the next GET of a file stop after `after` bytes and
close the connection (then, unless then_fail=False, answers 500 until `heal()`; with `from_byte`, only
a GET whose range starts at or after that offset is cut); `stop()` / `start()` take the server down
and back up on the same port. `requests` logs (method, path, Range header). `bytes_per_second`
throttles bodies through one shared link, as a real network connection would (the bench);
`latency` (seconds) delays every response, as a round trip would.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    revisions: dict[str, str] = field(default_factory=dict)    # name -> sha ("main" always)
    license: str | None = "apache-2.0"
    gated_token: str | None = None                              # HF_TOKEN that may read it
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)   # commit -> files (dataset commits)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest())
                                                for k, v in self.files.items())).encode()).hexdigest()
        self.revisions.setdefault("main", digest)
        self.history.setdefault(self.revisions["main"], self.files)

    def files_at(self, sha: str) -> dict[str, bytes]:
        return self.history.get(sha, self.files)

    @property
    def sha(self) -> str:
        return self.revisions["main"]


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.urls: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.bytes_per_second: float | None = None
        self.ignore_ranges = False
        self.latency = 0.0
        self.served: dict[str, int] = {}
        self.lfs: dict[str, bytes] = {}          # LFS objects uploaded, by sha256
        self.commits: list[tuple[str, str]] = []
        self.uploads: list[str] = []
        self._digests: dict[bytes, str] = {}
        self._link_free = 0.0
        self._cuts: dict[str, tuple[int, bool, int]] = {}
        self._broken: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo_id: str, files: dict[str, bytes], **kwargs) -> Repo:
        self.repos[repo_id] = Repo(dict(files), **kwargs)
        return self.repos[repo_id]

    def cut(self, path: str, after: int, then_fail: bool = True, from_byte: int = 0) -> None:
        """The next GET of `path` (whose range starts at or after `from_byte`) stops after `after`
        bytes and closes the connection; then 500s until heal() if then_fail."""
        self._cuts[path] = (after, then_fail, from_byte)

    def sha256(self, data: bytes) -> str:
        """A served file's digest, computed once (hashing 100 MB takes ~0.1 s; the ETag and the
        listing give it on every request). bytes cache their hash, so the lookup is O(1)."""
        digest = self._digests.get(data)
        if digest is None:
            digest = self._digests[data] = hashlib.sha256(data).hexdigest()
        return digest

    def served_bytes(self, suffix: str = "") -> int:
        """Body bytes written so far for the request paths that end with `suffix`."""
        with self.lock:
            return sum(n for path, n in self.served.items() if path.endswith(suffix))

    def heal(self) -> None:
        self._cuts.clear()
        self._broken.clear()

    def downloads(self) -> list[tuple[str, str | None]]:
        """(path, Range) of every GET of a file body so far."""
        return [(p, r) for m, p, r in self.requests if m == "GET" and ("/resolve/" in p or p.startswith("/files/"))]

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:   # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self) -> None:
        path = unquote(urlparse(self.path).path)
        data = self._body()
        with self.hub.lock:
            self.hub.requests.append(("PUT", path, None))
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "lfs-upload" and hashlib.sha256(data).hexdigest() == parts[1]:
            with self.hub.lock:
                self.hub.lfs[parts[1]] = data
                self.hub.uploads.append(parts[1])
            return self._json({})
        self._error(400, None, "bad upload")

    def do_POST(self) -> None:
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        data = self._body()
        with self.hub.lock:
            self.hub.requests.append(("POST", path, None))
        parts = path.strip("/").split("/")
        if parts == ["api", "validate-yaml"]:      # the client checks a README.md's YAML header before a commit
            return self._json({"errors": [], "warnings": []})
        if parts == ["api", "repos", "create"]:
            request = json.loads(data)
            kind = request.get("type") or "model"
            name = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            repo_id = name if kind == "model" else f"{kind}s/{name}"
            if repo_id in self.hub.repos:        # (the hub's 409 names the repo's url too)
                return self._json({"error": "You already created this repo", "url": f"{self.hub.url}/{repo_id}"},
                                  status=409)
            self.hub.add(repo_id, {})
            return self._json({"url": f"{self.hub.url}/{repo_id}"})
        if len(parts) == 7 and parts[0] == "datasets" and parts[2].endswith(".git") and parts[3:] == ["info", "lfs", "objects", "batch"]:
            request = json.loads(data)
            objects = []
            for item in request["objects"]:
                entry = {"oid": item["oid"], "size": item["size"]}
                if item["oid"] not in self.hub.lfs:
                    entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{item['oid']}"}}
                objects.append(entry)
            return self._json({"transfer": "basic", "objects": objects})
        if parts[:2] == ["api", "datasets"] and len(parts) >= 6:
            repo = self._repo(f"datasets/{parts[2]}/{parts[3]}")
            if repo is None:
                return
            action, revision = parts[4], parts[5]
            if action == "preupload":
                files = [{"path": f["path"], "shouldIgnore": False,
                          "uploadMode": "regular" if f["path"].endswith((".md", ".json", ".gitattributes"))
                          or f["path"].startswith(".") else "lfs"} for f in json.loads(data)["files"]]
                return self._json({"files": files})
            sha = self._revision(repo, revision)
            if sha is None:
                return
            if action == "paths-info":
                from urllib.parse import parse_qs

                wanted = parse_qs(data.decode()).get("paths", [])
                entries = self._entries(repo.files_at(sha), "", recursive=True, with_folders=True)
                return self._json([e for e in entries if e["path"] in wanted])
            if action == "commit":
                return self._commit(f"datasets/{parts[2]}/{parts[3]}", repo, revision, sha, data)
        self._error(404, "RepoNotFound")

    def _commit(self, repo_id: str, repo: Repo, revision: str, parent: str, data: bytes) -> None:
        import base64

        files = dict(repo.files_at(parent))
        for line in data.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    return self._error(400, None, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = self.hub.lfs[value["oid"]]
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
        sha = hashlib.sha1(f"{parent}\0{sorted((k, self.hub.sha256(v)) for k, v in files.items())}".encode()).hexdigest()
        with self.hub.lock:
            repo.history[sha] = files
            repo.files = files
            repo.revisions["main" if revision in (parent, "main") else revision] = sha
            self.hub.commits.append((revision, sha))
        self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

    @staticmethod
    def _entries(files: dict[str, bytes], under: str, recursive: bool, with_folders: bool = True) -> list[dict]:
        """Tree entries below `under` (files, and folders as the hub lists them)."""
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        found: dict[str, dict] = {}
        for name, data in sorted(files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            for depth in range(1, len(rest)):
                folder = prefix + "/".join(rest[:depth])
                if with_folders and (recursive or depth == 1):
                    found.setdefault(folder, {"type": "directory", "path": folder,
                                              "oid": hashlib.sha1(folder.encode()).hexdigest()})
                if not recursive:
                    break
            if recursive or len(rest) == 1:
                found[name] = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                               "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
        return list(found.values())

    def _json(self, data, status: int = 200) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, body: bool) -> None:
        path = unquote(urlparse(self.path).path)
        with self.hub.lock:
            self.hub.requests.append((self.command, path, self.headers.get("Range")))
        if self.hub.latency:
            time.sleep(self.hub.latency)
        parts = path.strip("/").split("/")
        if parts[0] == "files" and len(parts) == 2:
            return self._file(path, self.hub.urls.get(parts[1]), body, None)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(parts[2] + "/" + parts[3], parts[4:])
        if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
            return self._api(f"datasets/{parts[2]}/{parts[3]}", parts[4:])
        if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
            parts = [f"datasets/{parts[1]}", parts[2], *parts[3:]]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(parts[0] + "/" + parts[1])
            if repo is None:
                return
            sha = self._revision(repo, parts[3])
            if sha is None:
                return
            return self._file(path, repo.files_at(sha).get("/".join(parts[4:])), body, sha)
        self._error(404, "RepoNotFound")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        if repo.gated_token and self.headers.get("Authorization") != f"Bearer {repo.gated_token}":
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return None
        return repo

    def _revision(self, repo: Repo, name: str) -> str | None:
        sha = repo.revisions.get(name) or (name if name in repo.revisions.values() or name in repo.history else None)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {name}")
        return sha

    def _api(self, repo_id: str, rest: list[str]) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
        sha = self._revision(repo, revision)
        if sha is None:
            return
        if rest and rest[0] == "tree" and repo_id.startswith("datasets/"):
            from urllib.parse import parse_qs

            recursive = parse_qs(urlparse(self.path).query).get("recursive", ["False"])[0].lower() == "true"
            data = self._entries(repo.files_at(sha), "/".join(rest[2:]), recursive)
        elif rest and rest[0] == "tree":
            data = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for n, b in sorted(repo.files.items())]
        else:
            siblings = [{"rfilename": n, "size": len(b),
                         "lfs": {"sha256": self.hub.sha256(b), "size": len(b), "pointerSize": 134}}
                        for n, b in sorted(repo.files_at(sha).items())]
            data = {"id": repo_id.removeprefix("datasets/"), "modelId": repo_id, "sha": sha, "siblings": siblings, "private": False,
                    "tags": [f"license:{repo.license}"] if repo.license else [],
                    "cardData": {"license": repo.license} if repo.license else {}}
        self._json(data)

    def _file(self, path: str, data: bytes | None, body: bool, sha: str | None) -> None:
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        if body and path in self.hub._broken:
            return self._error(500, None, "Internal Error")
        start, end = 0, len(data)
        ranged = self.headers.get("Range") if body and not self.hub.ignore_ranges else None
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(len(data), int(last) + 1) if last else len(data)
            if start >= len(data) or end <= start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if ranged else 200)
        etag = self.hub.sha256(data)
        self.send_header("ETag", f'"{etag}"')
        if sha:
            self.send_header("X-Repo-Commit", sha)
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if not body:
            return
        with self.hub.lock:
            after, then_fail, from_byte = self.hub._cuts.get(path, (None, False, 0))
            cut = after if after is not None and start >= from_byte else None
            if cut is not None:
                del self.hub._cuts[path]
        stop = min(end, start + cut) if cut is not None else end
        self._send(data[start:stop], path)
        if cut is not None:
            if then_fail:
                self.hub._broken.add(path)
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _send(self, data: bytes, path: str) -> None:
        """Write the body; with bytes_per_second, through one shared link (all connections together)."""
        rate = self.hub.bytes_per_second
        step = 64 * 1024
        for offset in range(0, len(data), step):
            chunk = data[offset:offset + step]
            if rate:
                with self.hub.lock:          # reserve the link's next free slot for this chunk
                    start = max(time.perf_counter(), self.hub._link_free)
                    self.hub._link_free = start + len(chunk) / rate
                wait = start + len(chunk) / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            self.wfile.write(chunk)
            with self.hub.lock:
                self.hub.served[path] = self.hub.served.get(path, 0) + len(chunk)

    def _error(self, status: int, code: str | None, message: str = "not found") -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
