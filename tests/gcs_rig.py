"""A local Google Cloud Storage for the tests, reached by TensorFlow's own gs:// file system.

TensorFlow's GCS client has its endpoints compiled in (https://www.googleapis.com/storage/v1/,
its upload URI, storage.googleapis.com), but its curl honours `https_proxy`/`no_proxy` and
`CURL_CA_BUNDLE`, and `GOOGLE_AUTH_TOKEN_FOR_TESTING` + `NO_GCE_CHECK` skip credentials. So
the rig is two servers on free loopback ports, in a process of their own (a TensorFlow
call in the test process can hold Python's lock while it waits for an answer):

- `gcp-storage-emulator` (in memory) speaking the JSON API over plain HTTP;
- a proxy that accepts `CONNECT` to Google's hosts, terminates TLS with a certificate of a
  throw-away CA (trustme), and forwards each request to the emulator. Resumable-upload
  session URLs are built by the emulator from the `Host` header, which the proxy sets to
  itself, so uploads come back to it as plain HTTP (127.0.0.1 is in `no_proxy`).

Every request passes the proxy, which counts them (requests and bytes per object) and
injects faults on demand: a fraction answered 503, upload connections reset mid-body,
writes refused with 403. It also papers over what the emulator lacks or gets wrong:
curl's `Expect: 100-continue` (answered at once, not after curl's 1 s wait), chunked
upload bodies (decoded; the emulator would store the framing), an empty media upload
(TensorFlow's folder marker, which crashes the emulator) and the `storageLayout` query
TensorFlow makes before renaming a folder (answered: no hierarchical namespace).
"""

import contextlib
import dataclasses
import http.client
import json
import os
import random
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Dict, List
from urllib.parse import parse_qs, unquote, urlparse

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
BUCKET = "pseudoseg-test"
# The emulator answers one request at a time; TensorFlow retries a slow answer itself.
_FORWARD_TIMEOUT_S = 60


@dataclasses.dataclass
class Request:
    """One request the proxy answered: what it was, its bytes each way, how it ended."""

    method: str
    object: str  # the object name ('' for a listing or a bucket call)
    upload: bool  # an upload (the body is object content)
    sent: int  # body bytes from the client
    received: int  # body bytes to the client
    status: int  # HTTP status, or 0 for a reset connection
    time: float


@dataclasses.dataclass
class Faults:
    """What the proxy does wrong on purpose (all off by default)."""

    fail_fraction: float = 0.0  # requests answered 503 before reaching the emulator
    reset_fraction: float = 0.0  # upload connections closed (RST) halfway through the body
    refuse_writes: bool = False  # every write answered 403, for good
    seed: int = 0


def _object_name(path: str, query: Dict[str, List[str]]) -> str:
    """The object a JSON-API path or upload query names ('' for none)."""
    if "name" in query:
        return query["name"][0]
    parts = path.split("/o/", 1)
    if len(parts) == 2:
        return unquote(parts[1])
    if "prefix" in query:  # a listing: the prefix it lists
        return query["prefix"][0]
    if not path.startswith(("/storage/", "/upload/", "/download/")):  # storage.googleapis.com
        return unquote(path.lstrip("/").partition("/")[2])
    return ""


def _patch_emulator_empty_uploads():
    """The emulator reads an empty body as None and then fails on len(None); an empty
    object (TensorFlow's folder marker) is an empty body."""
    from gcp_storage_emulator import server

    if getattr(server, "_pseudoseg_patched", False):
        return
    read_data = server._read_data

    def read_data_or_empty(handler, query):
        data = read_data(handler, query)
        if (
            data is None
            and query.get("uploadType") in (["media"], None)
            and handler.command
            in (
                "POST",
                "PUT",
            )
        ):
            return b""
        return data

    server._read_data = read_data_or_empty
    server._pseudoseg_patched = True


def _patch_emulator_resume_status():
    """GCS answers a resumable session's status with no Range header while it holds no
    byte; the emulator says 'bytes=0-0' (one byte), and TensorFlow, resuming an upload
    after a reset connection, then starts at byte 1 and is refused."""
    from gcp_storage_emulator.handlers import objects

    def resumable_incomplete(response, storage, upload_id, fallback_end=0):
        response.status = objects.GoogleHTTPStatus.RESUME_INCOMPLETE
        received = storage.get_resumable_byte_count(upload_id)
        if received > 0:
            response["Range"] = f"bytes=0-{received - 1}"

    objects._resumable_incomplete = resumable_incomplete


def _patch_emulator_nagle():
    """The emulator writes a reply's head and body apart; with Nagle's algorithm on, each
    reply then waits for a delayed ACK (40 ms)."""
    from gcp_storage_emulator import server

    server.RequestHandler.disable_nagle_algorithm = True


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, rig):
        self.rig = rig
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _Reset(Exception):
    """The proxy dropped the connection on purpose."""


class _ProxyHandler(socketserver.StreamRequestHandler):
    """One client connection: a CONNECT tunnel (TLS, then requests) or plain requests."""

    disable_nagle_algorithm = True

    def handle(self):
        rig = self.server.rig
        conn, reader = self.connection, self.rfile
        try:
            line = reader.readline()
            if line.startswith(b"CONNECT "):
                host = line.split()[1].decode().split(":")[0]
                _read_headers(reader)
                if host not in GOOGLE_HOSTS:  # only Google's hosts, only to the emulator
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                conn = rig._server_tls.wrap_socket(conn, server_side=True)
                reader = conn.makefile("rb")
                line = reader.readline()
            while line.strip():
                if not rig._serve(conn, reader, line):
                    return
                line = reader.readline()
        except (_Reset, ConnectionError, ssl.SSLError, OSError):
            return
        except Exception:  # a rig bug: say so, the client sees a closed connection
            import traceback

            traceback.print_exc()


def _read_headers(reader) -> Dict[str, str]:
    """An HTTP head's header lines, up to the blank line: {lower-case name: value}."""
    headers = {}
    while True:
        line = reader.readline()
        if not line or line in (b"\r\n", b"\n"):
            return headers
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()


def _read_chunked(reader) -> bytes:
    """A body sent with `Transfer-Encoding: chunked`, without its framing."""
    body = bytearray()
    while True:
        size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            _read_headers(reader)  # trailers
            return bytes(body)
        body += reader.read(size)
        reader.readline()


def _reset(conn):
    """Closes a connection with a TCP reset (as a dropped network path does)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()
    raise _Reset()


class RigServer:
    """The emulator and proxy, run in the rig's process (`main`); the proxy also answers
    the client's control calls (plain HTTP to /_rig/...)."""

    def __init__(self, ca_file):
        import trustme
        from gcp_storage_emulator.server import create_server

        _patch_emulator_empty_uploads()
        _patch_emulator_nagle()
        _patch_emulator_resume_status()
        ca = trustme.CA()
        ca.cert_pem.write_to_path(ca_file)
        self._server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*GOOGLE_HOSTS).configure_cert(self._server_tls)
        emulator_port = _free_port()
        self._emulator = create_server("127.0.0.1", emulator_port, in_memory=True)
        self._emulator.start()
        self.emulator_address = ("127.0.0.1", emulator_port)
        self._proxy = _Proxy(self)
        self.port = self._proxy.server_address[1]
        self._lock = threading.Lock()
        self.requests: List[Request] = []
        self.faults = Faults()
        self._random = random.Random(0)

    def serve(self):
        self._proxy.serve_forever()

    def _control(self, method, path, body):
        """A control call: (status, JSON reply)."""
        if path == "/_rig/faults" and method == "POST":
            with self._lock:
                self.faults = Faults(**json.loads(body or b"{}"))
                self._random = random.Random(self.faults.seed)
            return 200, {}
        if path.startswith("/_rig/requests/"):
            start = int(path.rsplit("/", 1)[1])
            with self._lock:
                return 200, [dataclasses.asdict(r) for r in self.requests[start:]]
        if path == "/_rig/mark":
            with self._lock:
                return 200, len(self.requests)
        if path.startswith("/_rig/bucket/") and method == "POST":
            from gcp_storage_emulator.handlers import buckets

            name = path.rsplit("/", 1)[1]
            if not self._emulator._storage.buckets.get(name):
                buckets.create_bucket(name, self._emulator._storage)
            return 200, {}
        return 404, {"error": f"no control call {method} {path}"}

    # ------------------------------------------------------------------ proxy
    def _record(self, **fields):
        with self._lock:
            self.requests.append(Request(time=time.time(), **fields))

    def _serve(self, conn, reader, line) -> bool:
        """Answers one request on `conn`; False when the connection is to be closed."""
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers = _read_headers(reader)
        url = urlparse(target)
        query = parse_qs(url.query)
        name = _object_name(url.path, query)
        upload = url.path.startswith("/upload/")
        if url.path.startswith("/_rig/"):
            length = int(headers.get("content-length", "0") or 0)
            status, value = self._control(method, url.path, reader.read(length) if length else b"")
            reply = json.dumps(value).encode()
            conn.sendall(
                f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                + reply
            )
            return False
        with self._lock:
            faults = self.faults
            fail = self._random.random() < faults.fail_fraction
            reset = upload and self._random.random() < faults.reset_fraction
        if headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0") or 0)
            if reset and length > 1:
                reader.read(length // 2)
                self._record(
                    method=method,
                    object=name,
                    upload=upload,
                    sent=length // 2,
                    received=0,
                    status=0,
                )
                _reset(conn)
            body = reader.read(length) if length else b""
        if reset:
            self._record(method=method, object=name, upload=upload, sent=0, received=0, status=0)
            _reset(conn)
        if faults.refuse_writes and method not in ("GET", "HEAD"):
            status, reply_headers, reply = _error(
                403,
                f"rig@test.iam.gserviceaccount.com does not have storage.objects.create "
                f"access to the Google Cloud Storage object {name}.",
            )
        elif fail:
            status, reply_headers, reply = _error(503, "Service Unavailable (injected)")
        elif url.path.endswith("/storageLayout"):
            bucket = url.path.split("/b/", 1)[1].split("/")[0]
            status, reply_headers = 200, {"Content-Type": "application/json"}
            reply = json.dumps(
                {
                    "kind": "storage#storageLayout",
                    "bucket": bucket,
                    "location": "US",
                    "locationType": "multi-region",
                    "hierarchicalNamespace": {"enabled": False},
                }
            ).encode()
        else:
            status, reply_headers, reply = self._forward(method, target, headers, body)
        self._record(
            method=method,
            object=name,
            upload=upload,
            sent=len(body),
            received=len(reply),
            status=status,
        )
        head = [f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}"]
        head += [f"{k}: {v}" for k, v in reply_headers.items()]
        head += [f"Content-Length: {len(reply)}", "", ""]
        conn.sendall("\r\n".join(head).encode("latin-1") + (b"" if method == "HEAD" else reply))
        return headers.get("connection", "").lower() != "close"

    def _forward(self, method, target, headers, body):
        keep = {
            k: v
            for k, v in headers.items()
            if k not in ("host", "connection", "transfer-encoding", "content-length", "expect")
            and not k.startswith("proxy-")
        }
        keep["Host"] = f"127.0.0.1:{self.port}"  # session URLs come back to the proxy
        keep["Content-Length"] = str(len(body))
        forward = http.client.HTTPConnection(*self.emulator_address, timeout=_FORWARD_TIMEOUT_S)
        try:
            forward.connect()
            forward.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            forward.request(method, target, body=body, headers=keep)
            answer = forward.getresponse()
            reply = answer.read()
            reply_headers = {
                k: v
                for k, v in answer.getheaders()
                if k.lower()
                not in ("content-length", "connection", "transfer-encoding", "server", "date")
            }
            return answer.status, reply_headers, reply
        finally:
            forward.close()


def _error(code: int, message: str):
    """(status, headers, body) of an error answer in the JSON API's form."""
    body = json.dumps(
        {"error": {"code": code, "message": message, "errors": [{"message": message}]}}
    )
    return code, {"Content-Type": "application/json"}, body.encode()


def _free_port() -> int:
    """A loopback port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(requests: List[Request]) -> Dict[str, int]:
    """Requests and bytes each way of a list of requests."""
    return {
        "requests": len(requests),
        "uploaded": sum(r.sent for r in requests),
        "downloaded": sum(r.received for r in requests),
    }


class GcsRig:
    """The test side of the rig: starts its process, switches faults, reads the traffic
    seen, hands out fresh bucket folders, and gives the environment (`env`) that sends a
    process's gs:// to it."""

    def __init__(self):
        self._folder = tempfile.mkdtemp(prefix="gcs-rig-")
        self.ca_file = os.path.join(self._folder, "ca.pem")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.gcs_rig", self.ca_file],
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._process.stdout.readline()
        if not line.startswith("PORT "):
            self._process.kill()
            raise RuntimeError(f"the GCS rig did not start: {line!r}")
        self.port = int(line.split()[1])

    def _call(self, method, path, value=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = json.dumps(value).encode() if value is not None else None
            connection.request(method, path, body=body)
            answer = connection.getresponse()
            reply = json.loads(answer.read())
            if answer.status != 200:
                raise RuntimeError(f"rig: {reply}")
            return reply
        finally:
            connection.close()

    @property
    def env(self) -> Dict[str, str]:
        """The environment variables that send a process's gs:// to the rig: Google's
        hosts through the proxy, its CA trusted, a test token instead of credentials."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "https_proxy": proxy,
            "HTTPS_PROXY": proxy,
            "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": self.ca_file,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "rig-token",
            "NO_GCE_CHECK": "true",
        }

    def subprocess_env(self, **extra) -> Dict[str, str]:
        """os.environ plus `env` (and `extra`), for subprocess.run(env=...)."""
        return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **self.env, **extra}

    @contextlib.contextmanager
    def environ(self):
        """`env` set in this process for the block (TensorFlow reads it per request)."""
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def new_bucket_path(self, name: str = "run") -> str:
        """A fresh, empty folder in the rig's bucket: gs://BUCKET/<name>-<unique>."""
        self._call("POST", f"/_rig/bucket/{BUCKET}")
        return f"gs://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"

    def set_faults(self, **kwargs) -> None:
        """Switches faults on or off (fields of Faults; unnamed ones go back to off)."""
        self._call("POST", "/_rig/faults", kwargs)

    def mark(self) -> int:
        """A position in the traffic log, for `since`."""
        return self._call("GET", "/_rig/mark")

    def since(self, mark: int = 0) -> List[Request]:
        """The requests answered after `mark`."""
        return [Request(**r) for r in self._call("GET", f"/_rig/requests/{mark}")]

    def stop(self) -> None:
        """Ends the rig's process and deletes its CA file."""
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def start() -> GcsRig:
    """A running rig (stop it with .stop())."""
    return GcsRig()


def main(argv):
    """The rig's process: prints 'PORT <proxy port>' when ready, serves until its stdin
    closes (the test process ended, however it ended)."""
    server = RigServer(argv[1])
    threading.Thread(target=server.serve, daemon=True).start()
    print(f"PORT {server.port}", flush=True)
    sys.stdin.read()  # until the test process closes it (or dies)
    os._exit(0)  # the emulator's thread is not a daemon


if __name__ == "__main__":
    main(sys.argv)
