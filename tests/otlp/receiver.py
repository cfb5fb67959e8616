#!/usr/bin/env python3
"""A real OTLP receiver for Sakshi's otlp_* tests and benchmarks.

Built from the official OpenTelemetry protocol definitions (the `opentelemetry-proto` package from PyPI) and
grpcio. It serves, on loopback:

* gRPC: opentelemetry.proto.collector.{logs,trace,metrics}.v1 {Logs,Trace,Metrics}Service/Export;
* HTTP/protobuf: POST /v1/logs, /v1/traces, /v1/metrics (Content-Type application/x-protobuf).

Every received log record, span and metric data point is written as one JSON line to --out (flushed before the
request is answered, so whatever the receiver acknowledged is on disk even if it is killed with SIGKILL right
after). With --summary it writes one line per request instead: record count, first and last audit sequence
number and the lag (receive time minus the record's timestamp) of each record; the benchmark uses that.

When ready it prints one line `READY grpc=<port> http=<port>` on stdout. Port 0 picks a free port; a restart
passes the ports it printed the first time. --require-header NAME=VALUE makes both transports refuse requests
without that header (gRPC UNAUTHENTICATED, HTTP 401), to test that exporters send custom headers.
"""

import argparse
import base64
import json
import signal
import ssl
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def any_value(v):
    """An OTLP AnyValue as plain JSON."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return None


def audit_seq(lr):
    for kv in lr.attributes:
        if kv.key == "sakshi.audit.seq":
            return kv.value.int_value
    return None


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Sink:
    """Writes received items as JSON lines, one writer at a time, flushed before the request is answered."""

    def __init__(self, path, summary):
        self.lock = threading.Lock()
        self.out = open(path, "a", encoding="utf-8") if path and path != "-" else sys.stdout
        self.summary = summary

    def write(self, lines):
        with self.lock:
            for line in lines:
                self.out.write(json.dumps(line, separators=(",", ":")))
                self.out.write("\n")
            self.out.flush()

    def logs(self, req, transport):
        now = time.time_ns()
        if self.summary:
            # One line per request: its first and last sakshi.audit.seq (the shipper sends contiguous
            # ranges) and the lag of every record, in order.
            lags, first, last = [], None, None
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    records = sl.log_records
                    lags.extend(now - lr.time_unix_nano for lr in records)
                    if len(records):
                        first = audit_seq(records[0]) if first is None else first
                        last = audit_seq(records[-1])
            self.write([{"signal": "logs_summary", "transport": transport, "recv_ns": now, "n": len(lags),
                         "seq_first": first, "seq_last": last, "lags_ns": lags}])
            return
        lines = []
        for rl in req.resource_logs:
            resource = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    lines.append({
                        "signal": "log",
                        "transport": transport,
                        "recv_ns": now,
                        "resource": resource,
                        "scope": sl.scope.name,
                        "time_unix_nano": lr.time_unix_nano,
                        "observed_time_unix_nano": lr.observed_time_unix_nano,
                        "severity_number": lr.severity_number,
                        "severity_text": lr.severity_text,
                        "event_name": lr.event_name,
                        "body": any_value(lr.body),
                        "attributes": attrs(lr.attributes),
                        "trace_id": lr.trace_id.hex(),
                        "span_id": lr.span_id.hex(),
                        "flags": lr.flags,
                    })
        self.write(lines)

    def traces(self, req, transport):
        now = time.time_ns()
        lines = []
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    lines.append({
                        "signal": "span",
                        "transport": transport,
                        "recv_ns": now,
                        "resource": resource,
                        "scope": ss.scope.name,
                        "name": sp.name,
                        "kind": sp.kind,
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "start_time_unix_nano": sp.start_time_unix_nano,
                        "end_time_unix_nano": sp.end_time_unix_nano,
                        "attributes": attrs(sp.attributes),
                        "status_code": sp.status.code,
                        "status_message": sp.status.message,
                    })
        self.write(lines)

    def metrics(self, req, transport):
        now = time.time_ns()
        lines = []
        for rm in req.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = []
                    if kind in ("gauge", "sum"):
                        for p in getattr(m, kind).data_points:
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            points.append({"attributes": attrs(p.attributes), "value": value})
                    elif kind == "histogram":
                        for p in m.histogram.data_points:
                            points.append({"attributes": attrs(p.attributes), "count": p.count, "sum": p.sum,
                                           "bounds": list(p.explicit_bounds),
                                           "buckets": list(p.bucket_counts)})
                    lines.append({"signal": "metric", "transport": transport, "recv_ns": now,
                                  "resource": resource, "scope": sm.scope.name, "name": m.name,
                                  "unit": m.unit, "type": kind, "points": points})
        self.write(lines)


def header_ok(required, get):
    if required is None:
        return True
    name, value = required
    return get(name) == value


def grpc_check(required, context):
    if required is None:
        return True
    md = {k: v for k, v in context.invocation_metadata()}
    if header_ok(required, md.get):
        return True
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong " + required[0])
    return False


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink, required):
        self.sink, self.required = sink, required

    def Export(self, request, context):
        grpc_check(self.required, context)
        self.sink.logs(request, "grpc")
        return logs_service_pb2.ExportLogsServiceResponse()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink, required):
        self.sink, self.required = sink, required

    def Export(self, request, context):
        grpc_check(self.required, context)
        self.sink.traces(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink, required):
        self.sink, self.required = sink, required

    def Export(self, request, context):
        grpc_check(self.required, context)
        self.sink.metrics(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


HTTP_ROUTES = {
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse, "logs"),
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse,
                   "traces"),
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse, "metrics"),
}


def http_handler(sink, required):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", ctype="application/x-protobuf"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            route = HTTP_ROUTES.get(self.path)
            if route is None:
                self.reply(404, b"not found", "text/plain")
                return
            if not header_ok(required, self.headers.get):
                self.reply(401, b"unauthenticated", "text/plain")
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.reply(415, b"expected application/x-protobuf", "text/plain")
                return
            req_type, resp_type, signal_name = route
            req = req_type()
            try:
                req.ParseFromString(body)
            except DecodeError:
                self.reply(400, b"bad protobuf", "text/plain")
                return
            getattr(sink, signal_name)(req, "http")
            self.reply(200, resp_type().SerializeToString())

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0)
    ap.add_argument("--out", default="-", help="JSON-lines file to append to ('-' = stdout)")
    ap.add_argument("--summary", action="store_true", help="one line per logs request (benchmarks)")
    ap.add_argument("--require-header", help="NAME=VALUE that every request must carry")
    ap.add_argument("--tls-cert", help="PEM certificate: serve both transports over TLS")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = ap.parse_args()

    required = None
    if args.require_header:
        name, _, value = args.require_header.partition("=")
        required = (name.lower(), value)
    sink = Sink(args.out, args.summary)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(sink, required), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(sink, required), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(sink, required), server)
    addr = "127.0.0.1:%d" % args.grpc_port
    if args.tls_cert:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        grpc_port = server.add_secure_port(addr, grpc.ssl_server_credentials([(key, cert)]))
    else:
        grpc_port = server.add_insecure_port(addr)
    if grpc_port == 0:
        print("cannot bind gRPC port %d" % args.grpc_port, file=sys.stderr)
        sys.exit(1)
    server.start()

    httpd = ThreadingHTTPServer(("127.0.0.1", args.http_port), http_handler(sink, required))
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    print("READY grpc=%d http=%d" % (grpc_port, httpd.server_address[1]), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    httpd.shutdown()
    server.stop(0)


if __name__ == "__main__":
    main()
