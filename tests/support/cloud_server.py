"""The tests' stand-in for a vendor's cloud, run inside its own network namespace: GET serves
files from a directory (a model offer and its signature), POST appends the body as one JSON
line to a log (the telemetry uploads).

    python tests/support/cloud_server.py ADDR PORT DIR LOG
"""
import http.server
import json
import os
import socketserver
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = os.path.join(self.server.root, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(self.server.log, "a") as f:
            f.write(json.dumps({"path": self.path, "body": body.decode(errors="replace")}) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):              # HTTPServer's would look up our name (no DNS here)
        socketserver.TCPServer.server_bind(self)


if __name__ == "__main__":
    addr, port, root, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    srv = Server((addr, port), Handler)
    srv.root, srv.log = root, log
    print("serving", flush=True)
    srv.serve_forever()
