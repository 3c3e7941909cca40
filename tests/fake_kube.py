"""A fake Kubernetes API server: the one mock of this project (no real cluster can run here).

A real HTTP server on 127.0.0.1 (http.server in a thread) that serves only what the job launcher
calls: create/get/delete namespaced custom objects, list pods by label selector, read a pod's log.
It stores what it is sent, RECORDS every request (method, path), and plays the job controller as
far as the tests need: `finish_after(n, ...)` sets a terminal condition on a job once it has been
read n times, and the pods a test adds are what the launcher lists and whose logs it reads.

    with FakeKube() as kube:
        kube.finish_after(2, "Complete")
        launch_pretrain(cfg, data, out, api_client=kube.api_client())
        kube.calls()  # {("trainer.kubeflow.org", "trainjobs", "create"), ...}

Also here: `expand(text, env)`, the kubelet's $(VAR) expansion of env values, command and args.
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s

CUSTOM = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
                    r"(?:/(?P<name>[^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?:/(?P<sub>log))?)?$")
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass
class Finish:
    after_reads: int
    condition: str
    reason: str
    message: str


class FakeKube:
    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}   # (plural, namespace, name) -> object
        self.reads: dict[tuple[str, str, str], int] = {}
        self.pods: dict[tuple[str, str], dict] = {}            # (namespace, name) -> pod
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []              # (method, path with query)
        self.finish: Finish | None = None
        self.failures: list[int] = []                          # HTTP codes for the next custom-object GETs
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # ---- the test's side ------------------------------------------------------------------------

    def __enter__(self) -> "FakeKube":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_client(self) -> k8s.ApiClient:
        return k8s.ApiClient(k8s.Configuration(host=self.url))

    def finish_after(self, reads: int, condition: str, reason: str = "", message: str = "") -> None:
        """Once a job has been read `reads` times, its status gets `condition` = True."""
        self.finish = Finish(reads, condition, reason or condition, message or f"job {condition.lower()}")

    def fail_next_reads(self, code: int, times: int) -> None:
        """The next `times` reads of a job answer `code` (an overloaded or restarting API server)."""
        self.failures += [code] * times

    def put(self, obj: dict, status: dict | None = None) -> None:
        """An object as if created earlier (a previous attempt's job)."""
        plural = obj["kind"].lower() + "s"
        with self.lock:
            self.objects[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = {
                **obj, "metadata": {**obj["metadata"], "uid": str(uuid.uuid4())}, "status": status or {}}

    def add_pod(self, namespace: str, name: str, labels: dict, phase: str, log: str = "",
                waiting: str | None = None, exit_code: int | None = None) -> None:
        state = ({"waiting": {"reason": waiting}} if waiting else
                 {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}
                 if exit_code is not None else {"running": {}})
        with self.lock:
            self.pods[(namespace, name)] = {
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "trainer", "image": "trainer", "imageID": "", "ready": phase == "Running",
                     "restartCount": 0, "state": state}]}}
            self.logs[(namespace, name)] = log

    def calls(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource, verb) of every request, as RBAC sees it ("" = the core group)."""
        out = set()
        for method, target in self.requests:
            path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
            if m := CUSTOM.match(path):
                group, resource, named = m["group"], m["plural"], m["name"] is not None
            elif m := PODS.match(path):
                group, resource, named = "", "pods" + (f"/{m['sub']}" if m["sub"] else ""), m["name"] is not None
            else:
                raise AssertionError(f"the launcher called an endpoint this server does not know: {method} {target}")
            if method == "GET":
                verb = "get" if named else ("watch" if query.get("watch") == ["true"] else "list")
            else:
                verb = VERBS[method] if named or method == "POST" else "deletecollection"
            out.add((group, resource, verb))
        return out

    def methods(self, name: str) -> list[str]:
        """The HTTP methods of the requests on the custom object `name`, in order (POST for create)."""
        out = []
        for method, target in self.requests:
            m = CUSTOM.match(urlsplit(target).path)
            if m and (m["name"] == name or (method == "POST" and m["name"] is None)):
                out.append(method)
        return out

    # ---- the server's side ----------------------------------------------------------------------

    def _custom(self, method: str, m: re.Match, body: dict | None) -> tuple[int, dict]:
        plural, ns, name = m["plural"], m["ns"], m["name"]
        with self.lock:
            if method == "POST":
                key = (plural, ns, body["metadata"]["name"])
                if key in self.objects:
                    return 409, _status(409, "AlreadyExists", f"{plural} \"{key[2]}\" already exists")
                obj = {**body, "metadata": {**body["metadata"], "uid": str(uuid.uuid4()),
                                            "creationTimestamp": _now()}, "status": {}}
                self.objects[key] = obj
                self.reads.pop(key, None)  # a new job under an old name starts its own count
                return 201, obj
            key = (plural, ns, name)
            if key not in self.objects:
                return 404, _status(404, "NotFound", f"{plural} \"{name}\" not found")
            if method == "DELETE":
                del self.objects[key]
                return 200, _status(200, "", "deleted")
            if method == "GET":
                if self.failures:
                    code = self.failures.pop(0)
                    return code, _status(code, "ServiceUnavailable", "the server is busy")
                self.reads[key] = self.reads.get(key, 0) + 1
                if self.finish and self.reads[key] >= self.finish.after_reads and not self.objects[key]["status"]:
                    f = self.finish
                    self.objects[key]["status"] = {"conditions": [
                        {"type": "Created", "status": "True", "reason": "Created", "message": "created",
                         "lastTransitionTime": _now()},
                        {"type": f.condition, "status": "True", "reason": f.reason, "message": f.message,
                         "lastTransitionTime": _now()}]}
                return 200, self.objects[key]
        return 405, _status(405, "MethodNotAllowed", method)

    def _pods(self, m: re.Match, query: dict) -> tuple[int, dict | str]:
        ns, name = m["ns"], m["name"]
        with self.lock:
            if name is None:
                want = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if kv)
                items = [p for (pns, _), p in sorted(self.pods.items())
                         if pns == ns and want.items() <= p["metadata"]["labels"].items()]
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
            if (ns, name) not in self.pods:
                return 404, _status(404, "NotFound", f"pods \"{name}\" not found")
            if m["sub"] == "log":
                tail = int(query.get("tailLines", ["0"])[0])
                lines = self.logs[(ns, name)].splitlines(keepends=True)
                return 200, "".join(lines[-tail:] if tail else lines)
            return 200, self.pods[(ns, name)]


def _handler(kube: FakeKube):
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            kube.requests.append((self.command, self.path))
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if m := CUSTOM.match(split.path):
                code, out = kube._custom(self.command, m, body)
            elif self.command == "GET" and (m := PODS.match(split.path)):
                code, out = kube._pods(m, parse_qs(split.query))
            else:
                code, out = 404, _status(404, "NotFound", f"no route for {self.command} {split.path}")
            data = (out if isinstance(out, str) else json.dumps(out)).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(out, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, *args) -> None:  # the test output shows the launcher's lines, not these
            pass

    return Handler


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "reason": reason, "message": message, "code": code}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of $(VAR) in env values, command and args: $$ is a literal $, $(NAME)
    is NAME's value when NAME is defined (else left as written), any other $ stays."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2:end]
            out.append(env.get(name, text[i:end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
