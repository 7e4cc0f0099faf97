"""An upload's body to a file: the raw bytes (any Content-Type), or the first file of a
multipart/form-data body (`curl -F file=@model.onnx`), streamed under the size cap."""
from __future__ import annotations

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header


class FirstFile:
    """python-multipart callbacks that write the first part carrying a filename to ``out``."""

    def __init__(self, out):
        self.out, self.state = out, "before"        # before → writing → done
        self.headers: list = []
        self.field = b""
        self.written = 0

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_headers_finished": self.headers_done,
                "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.headers, self.field = [], b""

    def header_field(self, data, start, end) -> None:
        self.field = data[start:end].lower()
        self.headers.append([self.field, b""])

    def header_value(self, data, start, end) -> None:
        self.headers[-1][1] += data[start:end]

    def headers_done(self) -> None:
        disposition = dict(self.headers).get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        if self.state == "before" and b"filename" in params:
            self.state = "writing"

    def data(self, data, start, end) -> None:
        if self.state == "writing":
            self.out.write(data[start:end])
            self.written += end - start

    def end(self) -> None:
        if self.state == "writing":
            self.state = "done"


async def receive(req: Request, out, limit: int) -> int:
    """Stream the request's body into ``out`` (an open binary file); returns the bytes of the
    model written. 413 past ``limit`` (counted on the wire), 400 for a form without a file."""
    ctype, params = parse_options_header(req.headers.get("content-type", ""))
    form = None
    if ctype == b"multipart/form-data":
        if b"boundary" not in params:
            raise HTTPException(400, "multipart/form-data without a boundary")
        form = FirstFile(out)
        parser = MultipartParser(params[b"boundary"], form.callbacks())
    size = 0
    async for chunk in req.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload exceeds the {limit}-byte limit")
        if form is None:
            out.write(chunk)
        else:
            parser.write(chunk)
    if form is None:
        return size
    parser.finalize()
    if form.state != "done":
        raise HTTPException(400, "the form holds no complete file part: send the model as a file field "
                                 "(curl -F file=@model.onnx)")
    return form.written
