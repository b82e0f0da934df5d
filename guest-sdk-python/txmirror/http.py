"""Outbound HTTP, through the standard ``wasi:http/outgoing-handler``.

The host decides per request whether it may go out: the policy lists the
hosts a module may call, and in a mirrored run unsafe requests (POST, PUT,
DELETE…) are never sent but answered by a stub. The runtime puts an
idempotency key on every unsafe request of the primary::

    response = http.Request.post("http://127.0.0.1:8080/charges").json({"amount": 1250}).send()
    if response.status != 201:
        raise Error.unavailable(f"gateway said {response.status}")
"""

import json as _json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as t

from .errors import Error

_METHODS = {
    "GET": t.Method_Get(),
    "HEAD": t.Method_Head(),
    "POST": t.Method_Post(),
    "PUT": t.Method_Put(),
    "DELETE": t.Method_Delete(),
    "PATCH": t.Method_Patch(),
    "OPTIONS": t.Method_Options(),
}


@dataclass
class Response:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def json(self):
        try:
            return _json.loads(self.body)
        except ValueError as error:
            raise Error.unavailable(f"http: the answer is not JSON: {error}") from None


@dataclass
class Request:
    method: str
    url: str
    headers: List[Tuple[str, bytes]] = field(default_factory=list)
    content: bytes = b""
    timeout_ms: Optional[int] = None

    @classmethod
    def get(cls, url: str) -> "Request":
        return cls("GET", url)

    @classmethod
    def post(cls, url: str) -> "Request":
        return cls("POST", url)

    def header(self, name: str, value: str) -> "Request":
        self.headers.append((name.lower(), value.encode()))
        return self

    def body(self, content: bytes) -> "Request":
        self.content = bytes(content)
        return self

    def json(self, value) -> "Request":
        return self.header("content-type", "application/json").body(_json.dumps(value).encode())

    def timeout(self, milliseconds: int) -> "Request":
        """The most to wait for the first byte of the answer."""
        self.timeout_ms = milliseconds
        return self

    def send(self) -> Response:
        """Sends the request and reads the whole answer. A refusal of the
        host, a timeout or a broken connection raises ``Error``
        (``unavailable``)."""
        method = self.method.upper()
        headers = list(self.headers)
        # The whole body is known: say how long it is, rather than let the
        # host stream it chunked, which not every server reads.
        if not any(name == "content-length" for name, _ in headers) and (self.content or method not in ("GET", "HEAD")):
            headers.append(("content-length", str(len(self.content)).encode()))
        scheme, authority, path = _split_url(self.url)
        try:
            fields = t.Fields.from_list(headers)
        except Err as error:
            raise Error.unavailable(f"http: invalid header: {type(error.value).__name__}") from None
        request = t.OutgoingRequest(fields)
        try:
            request.set_method(_METHODS.get(method) or t.Method_Other(method))
            request.set_scheme(scheme)
            request.set_authority(authority)
            request.set_path_with_query(path)
        except Err:
            raise Error.unavailable(f"http: invalid URL {self.url}") from None
        body = request.body()
        options = None
        if self.timeout_ms is not None:
            options = t.RequestOptions()
            try:
                options.set_first_byte_timeout(self.timeout_ms * 1_000_000)
            except Err:
                pass  # A host without the option keeps its own timeout.
        try:
            pending = outgoing_handler.handle(request, options)
        except Err as error:
            raise _transport_error(error.value) from None
        # If the host refuses the request, writing the body fails too; the
        # answer then carries the real reason, so it wins.
        body_error = None
        if self.content:
            try:
                with body.write() as stream:
                    for start in range(0, len(self.content), 4096):
                        stream.blocking_write_and_flush(self.content[start : start + 4096])
            except Err as error:
                body_error = Error.unavailable(f"http: body: {type(error.value).__name__}")
        try:
            t.OutgoingBody.finish(body, None)
        except Err as error:
            body_error = body_error or Error.unavailable(f"http: body: {type(error.value).__name__}")
        with pending:
            while True:
                answer = pending.get()
                if answer is not None:
                    break
                with pending.subscribe() as ready:
                    ready.block()
        # Some(Ok(Ok(response))), Some(Ok(Err(code))), or Some(Err) when
        # taken twice.
        if isinstance(answer, Err):
            raise Error.unavailable("http: response taken twice")
        if isinstance(answer.value, Err):
            raise _transport_error(answer.value.value)
        response = answer.value.value
        if body_error is not None:
            raise body_error
        with response:
            status = response.status()
            with response.headers() as fields:
                headers = [(name, value.decode("utf-8", "replace")) for name, value in fields.entries()]
            incoming = response.consume()
            content = bytearray()
            with incoming.stream() as stream:
                while True:
                    try:
                        content += stream.blocking_read(64 * 1024)
                    except Err:
                        break  # Closed: the whole body has been read.
            with t.IncomingBody.finish(incoming):
                pass
        return Response(status, headers, bytes(content))


def _transport_error(code) -> Error:
    if isinstance(code, t.ErrorCode_HttpRequestDenied):
        return Error.unavailable("http: refused by the host (not granted by the policy, or stopped by the runtime)")
    if isinstance(code, (t.ErrorCode_ConnectionTimeout, t.ErrorCode_ConnectionReadTimeout)):
        return Error.unavailable("http: timed out")
    return Error.unavailable(f"http: transport error: {type(code).__name__.split('_', 1)[-1]}")


def _split_url(url: str):
    for prefix, scheme in (("http://", t.Scheme_Http()), ("https://", t.Scheme_Https())):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            slash = rest.find("/")
            authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
            if not authority:
                break
            return scheme, authority, path
    raise Error.unavailable(f"http: invalid URL {url}: it must start with http:// or https:// and name a host")
