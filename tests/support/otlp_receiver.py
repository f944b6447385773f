"""An OTLP/HTTP logs receiver for tests/otlp.rs, independent of the crate's encoder.

Requests are decoded with OpenTelemetry's official generated classes (the PyPI package
`opentelemetry-proto`, pinned in tests/support/python.rs): protobuf with `FromString`, OTLP/JSON
with protobuf's `json_format` after turning the hex trace and span ids (OTLP/JSON's one
departure from the proto3 JSON mapping) into the base64 that mapping expects; unknown fields
are refused. What arrived is reported on stdout as JSON lines:

- `{"type": "listening", "port": N}` once, first;
- per request `{"type": "request", "n", "path", "headers", "gzip", "content_type", "status",
  "records", "uids", "resource", "scope", "at", ...}` (`at`: a monotonic clock, seconds);
- per log record (unless OTLP_RECEIVER_REPORT=summary) `{"type": "record", "request": n,
  "event_name", "time_unix_nano", "observed_time_unix_nano", "severity_number",
  "severity_text", "body", "attributes", "dropped_attributes_count", "flags", "trace_id",
  "span_id"}`, each value tagged with its type: {"string": ...}, {"int": ...}, {"double": ...},
  {"bool": ...}, {"array": [...]}, {"kvlist": {...}}, {"bytes": hex}, {"empty": true}.

Answers are scripted: a JSON list of answers in OTLP_RECEIVER_SCRIPT (or POSTed to /script
later), each used by one logs request in order (then 200): {"status": 503, "headers": {"Retry-After": "1"}} or {"status": 200,
"partial": {"rejected": 3, "message": "..."}}. A 200's body is an ExportLogsServiceResponse in
the request's encoding.

It stops when its stdin closes (the test that started it is gone) or after
OTLP_RECEIVER_MAX_SECONDS (default 600).
"""

import base64
import gzip
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

REPORT_RECORDS = os.environ.get("OTLP_RECEIVER_REPORT", "records") != "summary"
MAX_SECONDS = float(os.environ.get("OTLP_RECEIVER_MAX_SECONDS", "600"))

out_lock = threading.Lock()
script_lock = threading.Lock()
script = json.loads(os.environ.get("OTLP_RECEIVER_SCRIPT", "[]"))
counter = {"n": 0}


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"))
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def val(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return {"empty": True}
    if kind == "string_value":
        return {"string": v.string_value}
    if kind == "int_value":
        return {"int": v.int_value}
    if kind == "double_value":
        return {"double": v.double_value}
    if kind == "bool_value":
        return {"bool": v.bool_value}
    if kind == "array_value":
        return {"array": [val(x) for x in v.array_value.values]}
    if kind == "kvlist_value":
        return {"kvlist": attributes(v.kvlist_value.values)}
    if kind == "bytes_value":
        return {"bytes": v.bytes_value.hex()}
    return {"unexpected": kind}


def attributes(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            # Keys must be unique: make a duplicate visible to the test.
            out.setdefault("__duplicates__", {"array": []})["array"].append({"string": kv.key})
        out[kv.key] = val(kv.value)
    return out


def hex_ids_to_base64(doc):
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in rec:
                        rec[key] = base64.b64encode(bytes.fromhex(rec[key])).decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", content_type="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path == "/script":
            with script_lock:
                script.extend(json.loads(raw))
            self.reply(200, b"ok")
            return
        at = time.monotonic()
        with script_lock:
            answer = script.pop(0) if script else {"status": 200}
            counter["n"] += 1
            n = counter["n"]
        content_type = self.headers.get("Content-Type", "")
        encoding = self.headers.get("Content-Encoding", "")
        report = {
            "type": "request",
            "n": n,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "gzip": encoding == "gzip",
            "content_type": content_type,
            "bytes": len(raw),
            "at": at,
        }
        is_json = content_type.startswith("application/json")
        try:
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            if is_json:
                doc = json.loads(body)
                first = None
                for rl in doc.get("resourceLogs", []):
                    for sl in rl.get("scopeLogs", []):
                        if sl.get("logRecords") and first is None:
                            first = sl["logRecords"][0]
                report["raw_first_record"] = json.loads(json.dumps(first))
                hex_ids_to_base64(doc)
                request = json_format.ParseDict(doc, ExportLogsServiceRequest())
            elif content_type.startswith("application/x-protobuf"):
                request = ExportLogsServiceRequest.FromString(body)
            else:
                raise ValueError("unsupported content type %r" % content_type)
        except Exception as e:  # noqa: BLE001 - any decoding failure is the test's finding
            report["status"] = 400
            report["error"] = repr(e)
            emit(report)
            self.reply(400, repr(e).encode())
            return

        status = int(answer.get("status", 200))
        report["status"] = status
        records = []
        uids = []
        resources = []
        scopes = []
        for rl in request.resource_logs:
            resources.append(attributes(rl.resource.attributes))
            for sl in rl.scope_logs:
                scopes.append({"name": sl.scope.name, "version": sl.scope.version})
                for r in sl.log_records:
                    attrs = attributes(r.attributes)
                    uid = attrs.get("log.record.uid", {}).get("string")
                    uids.append(uid)
                    if REPORT_RECORDS:
                        records.append(
                            {
                                "type": "record",
                                "request": n,
                                "status": status,
                                "event_name": r.event_name,
                                "time_unix_nano": r.time_unix_nano,
                                "observed_time_unix_nano": r.observed_time_unix_nano,
                                "severity_number": r.severity_number,
                                "severity_text": r.severity_text,
                                "body": val(r.body) if r.HasField("body") else None,
                                "attributes": attrs,
                                "dropped_attributes_count": r.dropped_attributes_count,
                                "flags": r.flags,
                                "trace_id": r.trace_id.hex(),
                                "span_id": r.span_id.hex(),
                            }
                        )
        report["records"] = len(uids)
        report["uids"] = uids
        report["resources"] = resources
        report["scopes"] = scopes
        emit(report)
        for rec in records:
            emit(rec)

        headers = answer.get("headers", {})
        if status != 200:
            if is_json:
                text = json.dumps({"code": 14, "message": answer.get("message", "scripted")})
                self.reply(status, text.encode(), "application/json", headers)
            else:
                self.reply(status, answer.get("message", "scripted").encode(), "text/plain", headers)
            return
        response = ExportLogsServiceResponse()
        partial = answer.get("partial")
        if partial:
            response.partial_success.rejected_log_records = int(partial.get("rejected", 0))
            response.partial_success.error_message = partial.get("message", "")
        if is_json:
            self.reply(200, json_format.MessageToJson(response).encode(), "application/json", headers)
        else:
            self.reply(200, response.SerializeToString(), "application/x-protobuf", headers)


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=watch_stdin, daemon=True).start()
    timer = threading.Timer(MAX_SECONDS, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    emit({"type": "listening", "port": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()
