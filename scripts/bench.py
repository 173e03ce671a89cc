#!/usr/bin/env python3
"""castgate side by side with HAProxy 2.6 and nginx: the load benchmark.

Run it through scripts/bench, which installs the peers and builds castgate.
Every server listens on a free port of 127.0.0.1 and every load stays on
loopback. The server under test runs on CPU 0 (taskset) with one worker
thread; wrk, oha, this script's own clients, Icecast and ffmpeg run on CPU 1.

Sections (issue 5), each printed as a Markdown table:
  throughput  wrk -t1 -c50 keep-alive on the playlist and on the 302:
              requests per second and per server CPU-second (utime+stime
              of every process of the server, from /proc)
  latency     oha at a fixed rate, 50% of the slowest peer's maximum, with
              latency correction: p50, p99, p99.9, non-2xx/3xx answers
  churn       wrk with `Connection: close`: connections per second and per
              server CPU-second
  idle        5,000 keep-alive connections, one request each, held: RSS
              growth / 5,000
  proxy       1,000 listeners of a real 128 kbit/s Icecast mount through
              castgate (mode: proxy), through HAProxy (http mode) and direct:
              server CPU, RSS, each listener's byte rate, RSS 60 s after
  reaction    an edge killed (SIGKILL): time until no answer names it; a
              load change on an edge: time until the playlist moves off it
  polling     1,000 edges (nginx answering a status document on 1,000
              ports) polled every second: castgate's CPU share
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"
MOUNT = "/air"
SECTIONS = ["throughput", "latency", "churn", "idle", "proxy", "reaction", "polling"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_GIVEN_PORTS = set()


def free_port():
    """A port free on 127.0.0.1 now, never the same one twice in a run."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before port {port} opened")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


def http_get(port, path, timeout=2.0):
    """One HTTP/1.0 GET; returns (status, headers dict lower-case, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        data = b""
        length = None
        while True:
            if length is None and b"\r\n\r\n" in data:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", data.split(b"\r\n\r\n", 1)[0])
                length = int(m.group(1)) if m else -1
            if length is not None and length >= 0 and len(data.split(b"\r\n\r\n", 1)[1]) >= length:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime + stime of pid and its descendants, seconds."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK_TCK


def rss_kib(pid):
    """VmRSS of pid and its descendants, KiB."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Proc:
    """A child process in its own process group, killed with it on stop()."""

    def __init__(self, name, argv, workdir, cpu=None, env=None):
        self.name = name
        self.argv = argv
        self.workdir = workdir
        self.cpu = cpu
        self.env = env
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.p = None

    def start(self):
        argv = self.argv if self.cpu is None else ["taskset", "-c", self.cpu] + self.argv
        logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=raise_nofile,
            env=self.env,
        )
        logf.close()
        return self

    @property
    def pid(self):
        return self.p.pid

    def kill(self, sig=signal.SIGKILL):
        if self.p is None:
            return
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.p = None

    def tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# ------------------------------------------------------------------ farm --


def icecast_user():
    for user in ("icecast2", "nobody"):
        try:
            import pwd
            import grp

            pw = pwd.getpwnam(user)
            return user, grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            continue
    raise RuntimeError("neither user icecast2 nor nobody exists for icecast to run as")


class Icecast:
    """A real icecast2 edge with an ffmpeg 128 kbit/s MP3 source on /air."""

    def __init__(self, name, root, clients=3000):
        self.name = name
        self.port = free_port()
        self.dir = os.path.join(root, name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        os.chmod(self.dir, 0o777)
        os.chmod(os.path.join(self.dir, "logs"), 0o777)
        security = ""
        if os.geteuid() == 0:
            user, group = icecast_user()
            security = (
                f"<security><chroot>0</chroot><changeowner><user>{user}</user>"
                f"<group>{group}</group></changeowner></security>"
            )
        self.conf = os.path.join(self.dir, "icecast.xml")
        with open(self.conf, "w") as f:
            f.write(
                f"""<icecast>
  <location>castgate-bench</location><admin>bench@localhost</admin>
  <hostname>{HOST}</hostname>
  <limits><clients>{clients}</clients><sources>4</sources>
    <queue-size>524288</queue-size><burst-size>65535</burst-size></limits>
  <authentication><source-password>hackme</source-password>
    <admin-user>admin</admin-user><admin-password>hackme</admin-password></authentication>
  <listen-socket><port>{self.port}</port><bind-address>{HOST}</bind-address></listen-socket>
  <paths><basedir>{self.dir}</basedir><logdir>{self.dir}/logs</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  {security}
</icecast>
"""
            )
        self.server = None
        self.source = None

    def start(self):
        self.server = Proc(f"{self.name}-icecast", ["icecast2", "-c", self.conf], self.dir, LOAD_CPU).start()
        wait_port(self.port, proc=self.server.p)
        self.source = Proc(
            f"{self.name}-ffmpeg",
            "ffmpeg -nostdin -hide_banner -loglevel error -re -f lavfi -i sine=frequency=440 "
            "-c:a libmp3lame -b:a 128k -content_type audio/mpeg -f mp3".split()
            + [f"icecast://source:hackme@{HOST}:{self.port}{MOUNT}"],
            self.dir,
            LOAD_CPU,
        ).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                _, _, body = http_get(self.port, "/status-json.xsl")
                if b'"listenurl"' in body:
                    return self
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: /air not live after 15 s\n{self.source.tail()}")

    def kill(self):
        for p in (self.source, self.server):
            if p:
                p.kill()

    def listeners(self):
        try:
            _, _, body = http_get(self.port, "/status-json.xsl")
        except OSError:
            return None
        m = re.search(rb'"listeners":(\d+)', body)
        return int(m.group(1)) if m else None


PLAYLIST_TITLE = "apple"


def castgate_config(port, admin_port, edges, interval="1s", timeout="800ms", fall=2, access=True):
    # The access log is on by default; it is turned off only for the
    # "access log off" comparison of the throughput section.
    lines = [
        f'listen: ["{HOST}:{port}"]',
        f'admin: {{ listen: "{HOST}:{admin_port}" }}',
        "reload: { watch: false }",
    ] + ([] if access else ["log: { access: false }"]) + [
        f"poll: {{ interval: {interval}, timeout: {timeout}, rise: 1, fall: {fall} }}",
        "balance: { policy: least_loaded }",
        "server: { threads: 1, grace_period: 0s, shutdown_timeout: 1s }",
        "edges:",
    ]
    for name, url in edges:
        lines.append(f"  - {{ name: {name}, kind: icecast, url: {url} }}")
    lines += [
        "streams:",
        f"  - {{ name: apple, mount: {MOUNT} }}",
    ]
    if edges:
        lines.append(f"  - {{ name: radio, mount: {MOUNT}, mode: proxy, edges: [{edges[0][0]}] }}")
    return "\n".join(lines) + "\n"


class Castgate:
    def __init__(self, binary, root, edges, name="castgate", access=True, **poll):
        self.port = free_port()
        self.admin_port = free_port()
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "castgate.yaml")
        with open(self.conf, "w") as f:
            f.write(castgate_config(self.port, self.admin_port, edges, access=access, **poll))
        # castgate's defaults: log level info, the access log written to
        # stderr (a file here, as under systemd's journal).
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = Proc(name, [binary, "run", "-c", self.conf], self.dir, SERVER_CPU, env)
        self.playlist = "/apple.m3u"
        self.redirect = "/apple"
        self.stream = "/radio"

    def start(self, wait_up=True):
        self.proc.start()
        wait_port(self.port, 60, self.proc.p)
        if wait_up:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if http_get(self.port, self.playlist)[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            raise RuntimeError(f"castgate never answered 200\n{self.proc.tail()}")
        return self

    @property
    def pid(self):
        return self.proc.pid


def playlist_body(url):
    # The same bytes castgate answers (src/front/playlist.rs).
    return f"#EXTM3U\n#EXTINF:-1,{PLAYLIST_TITLE}\n{url}\n"


class Served:
    """A server under test started from self.proc, listening on self.port."""

    def start(self):
        self.proc.start()
        wait_port(self.port, proc=self.proc.p)
        return self

    @property
    def pid(self):
        return self.proc.pid


def nginx_conf(d, servers):
    """An nginx.conf for one worker, everything under d, with `servers`."""
    return f"""worker_processes 1;
worker_rlimit_nofile 19000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 9000; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {d};
    proxy_temp_path {d};
    fastcgi_temp_path {d};
    uwsgi_temp_path {d};
    scgi_temp_path {d};
{servers}
}}
"""


class Haproxy(Served):
    def __init__(self, root, edge):
        self.port = free_port()
        self.dir = os.path.join(root, "haproxy")
        os.makedirs(self.dir, exist_ok=True)
        url = f"http://{HOST}:{edge.port}{MOUNT}"
        body_file = os.path.join(self.dir, "apple.m3u")
        with open(body_file, "w") as f:
            f.write(playlist_body(url))
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(
                f"""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend front
    bind {HOST}:{self.port}
    http-request return status 200 content-type audio/x-mpegurl hdr Cache-Control no-store file {body_file} if {{ path /apple.m3u }}
    http-request redirect location {url} code 302 if {{ path /apple }}
    use_backend edge if {{ path /radio }}
backend edge
    http-request set-path {MOUNT}
    server e1 {HOST}:{edge.port}
"""
            )
        self.proc = Proc("haproxy", ["haproxy", "-db", "-f", self.conf], self.dir, SERVER_CPU)
        self.playlist = "/apple.m3u"
        self.redirect = "/apple"
        self.stream = "/radio"


class Nginx(Served):
    def __init__(self, root, edge):
        self.port = free_port()
        self.dir = os.path.join(root, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        url = f"http://{HOST}:{edge.port}{MOUNT}"
        body = playlist_body(url).replace("\n", "\\n")
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(nginx_conf(self.dir, f"""    server {{
        listen {HOST}:{self.port};
        location = /apple.m3u {{
            default_type audio/x-mpegurl;
            add_header Cache-Control no-store;
            return 200 "{body}";
        }}
        location = /apple {{ return 302 {url}; }}
    }}"""))
        self.proc = Proc("nginx", ["nginx", "-c", self.conf, "-p", self.dir], self.dir, SERVER_CPU)
        self.playlist = "/apple.m3u"
        self.redirect = "/apple"


class BareFront(Served):
    """examples/bare_front: pingora answering a fixed playlist, castgate's floor."""

    def __init__(self, binary, root, app):
        self.port = free_port()
        self.dir = os.path.join(root, "bare-app" if app else "bare-proxy")
        os.makedirs(self.dir, exist_ok=True)
        argv = [binary, f"{HOST}:{self.port}"] + (["app"] if app else [])
        self.proc = Proc(os.path.basename(self.dir), argv, self.dir, SERVER_CPU)
        self.playlist = "/apple.m3u"
        self.redirect = "/apple"


# ------------------------------------------------------------- measures --


def measure_cpu(pid, fn):
    """Run fn() and return (its result, server CPU seconds used meanwhile)."""
    before = cpu_seconds(pid)
    result = fn()
    return result, cpu_seconds(pid) - before


def wrk(port, path, seconds, close=False):
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c50", f"-d{seconds}s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": total,
        "rps": rps,
        "non2xx3xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def oha(port, path, seconds, rate):
    argv = [
        "taskset", "-c", LOAD_CPU, "oha", "--no-tui", "--output-format", "json",
        "-z", f"{seconds}s", "-c", "50", "-q", str(rate), "--latency-correction",
        f"http://{HOST}:{port}{path}",
    ]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    pct = out["latencyPercentiles"]
    codes = out.get("statusCodeDistribution", {})
    bad = sum(n for code, n in codes.items() if not (200 <= int(code) < 400))
    errors = sum(out.get("errorDistribution", {}).values())
    return {
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "p999": pct["p99.9"] * 1000,
        "rps": out["summary"]["requestsPerSec"],
        "bad": bad + errors,
    }


async def hold_idle(port, path, count):
    """Open count keep-alive connections, one GET each, and keep them."""
    conns = []
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection(HOST, port)
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await r.readexactly(length)
            conns.append((r, w))

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


def idle_memory(server, count):
    base = rss_kib(server.pid)

    async def run():
        conns = await hold_idle(server.port, server.playlist, count)
        await asyncio.sleep(2)
        held = rss_kib(server.pid)
        alive = sum(1 for _, w in conns if not w.is_closing())
        for _, w in conns:
            w.close()
        return held, alive

    held, alive = asyncio.run(run())
    return {"base_kib": base, "held_kib": held, "per_conn_b": (held - base) * 1024 / count, "alive": alive}


class Listeners:
    """count listeners reading an MP3 stream; counts each one's bytes."""

    def __init__(self, port, path, count):
        self.port, self.path, self.count = port, path, count
        self.bytes = [0] * count
        self.status = [None] * count
        self.tasks = []

    async def one(self, i):
        try:
            r, w = await asyncio.open_connection(HOST, self.port)
        except OSError:
            self.status[i] = "connect"
            return
        try:
            w.write(f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
            head = await r.readuntil(b"\r\n\r\n")
            self.status[i] = int(head.split()[1])
            while True:
                chunk = await r.read(65536)
                if not chunk:
                    break
                self.bytes[i] += len(chunk)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError, ValueError):
            pass
        finally:
            w.close()

    async def connect(self, per_second=250):
        for i in range(self.count):
            self.tasks.append(asyncio.create_task(self.one(i)))
            await asyncio.sleep(1 / per_second)

    async def stop(self):
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def proxy_run(server_pid, port, path, count, window, settle):
    """count listeners through port; (rates B/s, cpu share, rss growth, statuses)."""

    async def run():
        base = rss_kib(server_pid) if server_pid else 0
        ls = Listeners(port, path, count)
        await ls.connect()
        await asyncio.sleep(settle)
        b1, t1 = list(ls.bytes), time.monotonic()
        c1 = cpu_seconds(server_pid) if server_pid else 0
        await asyncio.sleep(window)
        b2, t2 = list(ls.bytes), time.monotonic()
        c2 = cpu_seconds(server_pid) if server_pid else 0
        rss = rss_kib(server_pid) if server_pid else 0
        await ls.stop()
        rates = [(y - x) / (t2 - t1) for x, y in zip(b1, b2)]
        return {
            "rates": rates,
            "cpu_share": (c2 - c1) / (t2 - t1),
            "base_kib": base,
            "rss_kib": rss,
            "ok": sum(1 for s in ls.status if s == 200),
        }

    return asyncio.run(run())


# ---------------------------------------------------------------- report --


class Report:
    def __init__(self):
        self.parts = []

    def table(self, title, header, rows, notes=()):
        out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        out += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
        text = "\n".join(out)
        print(text, flush=True)
        self.parts.append(text)

    def text(self):
        return "\n".join(self.parts)


FLOOR_NOTES = [
    "pingora-proxy (bare): examples/bare_front, a ProxyHttp answering a fixed playlist from "
    "request_filter with castgate's listener buffers and allocator: the floor of castgate's front door",
    "pingora-core app (bare): the same answer from a plain pingora-core HttpServerApp",
]


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "-"


def verdict(ok):
    return "met" if ok else "**missed**"


# --------------------------------------------------------------- sections --


def section_throughput(args, servers, floors, report, results, extras=None):
    rows = []
    extras = extras or {}
    for label, path_attr in (("playlist", "playlist"), ("302", "redirect")):
        per = {}
        # The floors answer the same playlist to every path: measure them once.
        for name, srv in (list(servers.items()) + list(extras.items())
                          + (list(floors.items()) if label == "playlist" else [])):
            path = getattr(srv, path_attr)
            wrk(srv.port, path, 2)  # warm up
            r, cpu = measure_cpu(srv.pid, lambda: wrk(srv.port, path, args.duration))
            r["cpu"] = cpu
            r["per_cpu"] = r["requests"] / cpu if cpu else 0
            per[name] = r
            log(f"throughput {label} {name}: {r['rps']:.0f} req/s, {r['per_cpu']:.0f} req/CPU-s")
        results.setdefault("throughput", {})[label] = per
        hap = per["haproxy"]
        for name, r in per.items():
            rows.append([
                label, name, f"{r['rps']:.0f}", f"{r['cpu']:.1f}", f"{r['per_cpu']:.0f}",
                ratio(r["per_cpu"], hap["per_cpu"]), r["non2xx3xx"] + r["socket_errors"],
            ])
    report.table(
        f"Keep-alive throughput (wrk -t1 -c50 -d{args.duration}s)",
        ["answer", "server", "req/s", "server CPU s", "req per CPU-s", "vs HAProxy", "errors"],
        rows,
        FLOOR_NOTES if floors else (),
    )


def section_latency(args, servers, report, results):
    tp = results.get("throughput", {}).get("playlist")
    if tp:
        slowest = min(r["rps"] for r in tp.values())
    else:
        slowest = min(wrk(s.port, s.playlist, 5)["rps"] for s in servers.values())
    rate = int(slowest * 0.5)
    rows, per = [], {}
    # Two interleaved rounds; each server keeps its better p99, so that a
    # burst of noise on the shared machine does not decide the comparison.
    for round_ in range(2):
        for name, srv in servers.items():
            r = oha(srv.port, srv.playlist, args.duration, rate)
            r["p99_runs"] = per.get(name, {}).get("p99_runs", []) + [r["p99"]]
            if name not in per or r["p99"] < per[name]["p99"]:
                r["bad"] += per.get(name, {}).get("bad", 0)
                per[name] = r
            else:
                per[name]["bad"] += r["bad"]
                per[name]["p99_runs"] = r["p99_runs"]
            log(f"latency {name} round {round_ + 1}: p99 {r['p99']:.3f} ms")
    hap = per["haproxy"]
    for name, r in per.items():
        rows.append([
            name, f"{r['rps']:.0f}", f"{r['p50']:.3f}", f"{r['p99']:.3f}", f"{r['p999']:.3f}",
            " / ".join(f"{x:.3f}" for x in r["p99_runs"]), ratio(r["p99"], hap["p99"]), r["bad"],
        ])
    results["latency"] = {"rate": rate, "servers": per}
    report.table(
        f"Latency at {rate} req/s, half the slowest peer's maximum (oha -c50 -q{rate} -z{args.duration}s --latency-correction), playlist",
        ["server", "req/s done", "p50 ms", "p99 ms", "p99.9 ms", "p99 of each round", "p99 vs HAProxy",
         "non-2xx/3xx or errors"],
        rows,
        ["two interleaved rounds; the better round of each server is shown"],
    )


def section_churn(args, servers, report, results):
    rows, per = [], {}
    for name, srv in servers.items():
        secs = max(5, args.duration // 2)
        r, cpu = measure_cpu(srv.pid, lambda: wrk(srv.port, srv.playlist, secs, close=True))
        r["cpu"] = cpu
        r["per_cpu"] = r["requests"] / cpu if cpu else 0
        per[name] = r
        log(f"churn {name}: {r['rps']:.0f} conn/s")
    hap = per["haproxy"]
    for name, r in per.items():
        rows.append([
            name, f"{r['rps']:.0f}", f"{r['per_cpu']:.0f}", ratio(r["per_cpu"], hap["per_cpu"]),
            r["non2xx3xx"] + r["socket_errors"],
        ])
    results["churn"] = per
    report.table(
        "Connection churn (wrk -t1 -c50, Connection: close), playlist",
        ["server", "connections/s", "per CPU-s", "vs HAProxy", "errors"],
        rows,
    )


def section_idle(args, servers, floors, report, results):
    rows, per = [], {}
    for name, srv in list(servers.items()) + list(floors.items()):
        r = idle_memory(srv, args.idle)
        per[name] = r
        log(f"idle {name}: {r['per_conn_b']:.0f} B/conn ({r['alive']} alive)")
    hap = per["haproxy"]
    for name, r in per.items():
        rows.append([
            name, f"{r['base_kib'] / 1024:.1f}", f"{r['held_kib'] / 1024:.1f}",
            f"{r['per_conn_b'] / 1024:.2f}", ratio(r["per_conn_b"], hap["per_conn_b"]), r["alive"],
        ])
    results["idle"] = per
    report.table(
        f"Idle keep-alive memory ({args.idle} connections, one request each, held)",
        ["server", "RSS before MiB", "RSS held MiB", "KiB per connection", "vs HAProxy", "still open"],
        rows,
        FLOOR_NOTES if floors else (),
    )


def section_proxy(args, castgate, haproxy, edge, report, results):
    n, window, settle = args.listeners, args.window, 5
    per = {}
    log(f"proxy: {n} listeners direct")
    per["direct"] = proxy_run(None, edge.port, MOUNT, n, window, settle)
    for name, srv in (("castgate", castgate), ("haproxy", haproxy)):
        log(f"proxy: {n} listeners through {name}")
        r = proxy_run(srv.pid, srv.port, srv.stream, n, window, settle)
        time.sleep(args.after)
        r["after_kib"] = rss_kib(srv.pid)
        per[name] = r
    direct_rate = statistics.mean(per["direct"]["rates"])
    rows = []
    for name in ("castgate", "haproxy", "direct"):
        r = per[name]
        low = min(r["rates"]) if r["rates"] else 0
        under = sum(1 for x in r["rates"] if x < 0.95 * direct_rate)
        rows.append([
            name, r["ok"],
            f"{r['cpu_share'] * 100:.1f}%" if name != "direct" else "-",
            f"{(r['rss_kib'] - r['base_kib']) / 1024:.1f}" if name != "direct" else "-",
            f"{statistics.mean(r['rates']) * 8 / 1000:.1f}", f"{low * 8 / 1000:.1f}", under,
            f"{r['base_kib'] / 1024:.1f} → {r['after_kib'] / 1024:.1f}" if name != "direct" else "-",
        ])
    results["proxy"] = {k: {kk: vv for kk, vv in v.items() if kk != "rates"} for k, v in per.items()}
    results["proxy"]["direct_rate"] = direct_rate
    for name in ("castgate", "haproxy"):
        r = per[name]
        results["proxy"][name]["min_rate"] = min(r["rates"])
        results["proxy"][name]["under95"] = sum(1 for x in r["rates"] if x < 0.95 * direct_rate)
    report.table(
        f"Proxy mode: {n} listeners of a 128 kbit/s Icecast mount ({window} s window)",
        ["path", "got 200", "server CPU (one core)", "RSS growth MiB", "mean kbit/s", "lowest kbit/s",
         "under 95% of direct", f"RSS MiB before → {args.after} s after"],
        rows,
    )


def last_naming(port, path, edge_url, t0, until, every=0.005):
    """Ask path every `every` s until `until`; the last time an answer named edge_url."""
    last = None
    answers = 0
    with socket.create_connection((HOST, port)) as s:
        s.settimeout(2)
        f = s.makefile("rb")
        req = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        while time.monotonic() < until:
            s.sendall(req)
            status = int(f.readline().split()[1])
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = f.read(length)
            answers += 1
            if status == 200 and edge_url.encode() in body:
                last = time.monotonic()
            time.sleep(every)
    return (last - t0 if last else 0.0), answers


def section_reaction(args, binary, root, report, results):
    a = Icecast("react-a", root).start()
    b = Icecast("react-b", root).start()
    cg = Castgate(binary, root, [("a", f"http://{HOST}:{a.port}"), ("b", f"http://{HOST}:{b.port}")],
                  name="castgate-react").start()
    bound = 1.0 * 2 + 0.8
    deaths = []
    try:
        for trial in range(args.trials):
            url_b = f"http://{HOST}:{b.port}{MOUNT}"
            # b must be in rotation before it dies.
            deadline = time.monotonic() + 20
            while True:
                seen, _ = last_naming(cg.port, cg.playlist, url_b, time.monotonic(), time.monotonic() + 0.3, 0.01)
                if seen or time.monotonic() > deadline:
                    break
            t0 = time.monotonic()
            b.kill()
            gone, answers = last_naming(cg.port, cg.playlist, url_b, t0, t0 + bound + 1.5)
            deaths.append(gone)
            log(f"reaction death {trial + 1}: {gone:.3f} s ({answers} answers)")
            b.start()
        moves = []
        for trial in range(args.trials):
            loaded, other = (a, b) if trial % 2 == 0 else (b, a)
            url = f"http://{HOST}:{loaded.port}{MOUNT}"
            moves.append(load_change(cg, loaded, url))
            log(f"reaction load change {trial + 1}: {moves[-1]:.3f} s")
    finally:
        for p in (a, b):
            p.kill()
        cg.proc.kill()
    ok_death = sum(1 for d in deaths if d <= bound)
    ok_move = sum(1 for m in moves if m <= 2.0)
    results["reaction"] = {"deaths": deaths, "moves": moves, "bound": bound}
    report.table(
        f"Reaction ({args.trials} trials each; poll interval 1 s, fall 2, timeout 800 ms)",
        ["event", "median s", "max s", "bound s", "within bound"],
        [
            ["edge killed → in no answer", f"{statistics.median(deaths):.2f}", f"{max(deaths):.2f}",
             f"{bound:.1f}", f"{ok_death}/{len(deaths)}"],
            ["50 listeners join an edge → playlist moves off it", f"{statistics.median(moves):.2f}",
             f"{max(moves):.2f}", "2.0", f"{ok_move}/{len(moves)}"],
        ],
        ["the old script's figure for both: up to 60 s (cron once a minute)"],
    )


def load_change(cg, loaded, url):
    """50 listeners join `loaded`; seconds until the playlist stops naming it."""

    async def run():
        ls = Listeners(loaded.port, MOUNT, 50)
        # Both edges equal: wait until the playlist names `loaded` at all.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen, _ = await asyncio.to_thread(
                last_naming, cg.port, cg.playlist, url, time.monotonic(), time.monotonic() + 0.3, 0.01)
            if seen:
                break
        await ls.connect(per_second=1000)
        while sum(1 for s in ls.status if s is not None) < 50:
            await asyncio.sleep(0.005)
        t0 = time.monotonic()
        moved, _ = await asyncio.to_thread(last_naming, cg.port, cg.playlist, url, t0, t0 + 3.0, 0.02)
        await ls.stop()
        # Let the edge's count fall back before the next trial.
        while (loaded.listeners() or 0) > 0:
            await asyncio.sleep(0.1)
        return moved

    return asyncio.run(run())


def section_polling(args, binary, root, report, results):
    n = args.poll_edges
    d = os.path.join(root, "status-farm")
    os.makedirs(d, exist_ok=True)
    ports = [free_port() for _ in range(n)]
    status = {
        "icestats": {
            "admin": "bench@localhost", "host": HOST, "location": "castgate-bench",
            "server_id": "Icecast 2.4.4", "server_start_iso8601": "2026-11-22T00:00:00+0000",
            "source": {"audio_info": "channels=2;samplerate=44100;bitrate=128", "bitrate": 128,
                       "genre": "various", "listener_peak": 3, "listeners": 3,
                       "listenurl": f"http://{HOST}:8000{MOUNT}", "server_name": "apple",
                       "server_type": "audio/mpeg", "stream_start_iso8601": "2026-11-22T00:00:00+0000"},
        }
    }
    with open(os.path.join(d, "status-json.xsl"), "w") as f:
        json.dump(status, f)
    listens = "\n".join(f"        listen {HOST}:{p};" for p in ports)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(d, f"""    server {{
{listens}
        root {d};
        location = /status-json.xsl {{ default_type application/json; }}
    }}"""))
    farm = Proc("status-farm", ["nginx", "-c", conf, "-p", d], d, LOAD_CPU).start()
    wait_port(ports[-1], proc=farm.p)
    cg = Castgate(binary, root, [(f"e{i}", f"http://{HOST}:{p}") for i, p in enumerate(ports)],
                  name="castgate-poll")
    try:
        cg.start()
        deadline = time.monotonic() + 30
        up = 0
        while time.monotonic() < deadline:
            _, _, body = http_get(cg.admin_port, "/status.json")
            up = sum(1 for e in json.loads(body)["edges"] if e.get("up"))
            if up == n:
                break
            time.sleep(0.5)
        time.sleep(2)
        secs = args.poll_seconds
        c0 = cpu_seconds(cg.pid)
        rss0 = rss_kib(cg.pid)
        time.sleep(secs)
        share = (cpu_seconds(cg.pid) - c0) / secs
        rss1 = rss_kib(cg.pid)
        _, _, body = http_get(cg.admin_port, "/status.json")
        up_end = sum(1 for e in json.loads(body)["edges"] if e.get("up"))
    finally:
        cg.proc.kill()
        farm.kill()
    results["polling"] = {"edges": n, "share": share, "up": up, "up_end": up_end, "rss_kib": rss1}
    log(f"polling: {share * 100:.2f}% of a core")
    report.table(
        f"Polling scale ({n} edges on {n} ports of one local nginx, interval 1 s, {secs} s measured)",
        ["edges up (start / end)", "castgate CPU (one core)", "RSS MiB", "target"],
        [[f"{up} / {up_end}", f"{share * 100:.2f}%", f"{rss0 / 1024:.1f} → {rss1 / 1024:.1f}", "< 5%"]],
    )


def summary(results, report):
    rows = []
    tp = results.get("throughput")
    if tp:
        for label in ("playlist", "302"):
            c, h = tp[label]["castgate"], tp[label]["haproxy"]
            r = c["per_cpu"] / h["per_cpu"]
            rows.append([f"{label} requests per CPU-s ≥ 1.0 × HAProxy", f"{r:.2f}×", verdict(r >= 1.0)])
            off = tp[label].get("castgate (access log off)")
            if off and off["per_cpu"]:
                cost = 1 - c["per_cpu"] / off["per_cpu"]
                rows.append([f"{label}: the access log (on by default) costs ≤ 5% of requests per CPU-s",
                             f"{cost * 100:.1f}% ({c['per_cpu']:.0f} vs {off['per_cpu']:.0f})",
                             verdict(cost <= 0.05)])
    lat = results.get("latency")
    if lat:
        c, h = lat["servers"]["castgate"], lat["servers"]["haproxy"]
        r = c["p99"] / h["p99"]
        rows.append(["p99 at the fixed rate ≤ 1.0 × HAProxy; no non-2xx/3xx",
                     f"{r:.2f}× ({c['p99']:.3f} vs {h['p99']:.3f} ms), {c['bad']} bad",
                     verdict(r <= 1.0 and c["bad"] == 0)])
    idle = results.get("idle")
    if idle:
        c, h = idle["castgate"]["per_conn_b"], idle["haproxy"]["per_conn_b"]
        rows.append(["idle keep-alive memory ≤ 2 × HAProxy and < 8 KiB per connection",
                     f"{c / 1024:.2f} KiB, {c / h:.2f}×" if h else f"{c / 1024:.2f} KiB",
                     verdict(c < 8192 and (h <= 0 or c <= 2 * h))])
    px = results.get("proxy")
    if px:
        c, h = px["castgate"], px["haproxy"]
        cpu_r = c["cpu_share"] / h["cpu_share"] if h["cpu_share"] else float("inf")
        rss_c, rss_h = c["rss_kib"] - c["base_kib"], h["rss_kib"] - h["base_kib"]
        rss_r = rss_c / rss_h if rss_h > 0 else float("inf")
        back = abs(c["after_kib"] - c["base_kib"]) <= 0.1 * c["base_kib"]
        rows.append(["proxied listener CPU ≤ 1.0 × HAProxy", f"{cpu_r:.2f}×", verdict(cpu_r <= 1.0)])
        rows.append(["proxied listener RSS ≤ 1.5 × HAProxy", f"{rss_r:.2f}×", verdict(rss_r <= 1.5)])
        rows.append(["RSS back within 10% of baseline after the load",
                     f"{c['base_kib'] / 1024:.1f} → {c['after_kib'] / 1024:.1f} MiB", verdict(back)])
        rows.append(["no proxied listener under 95% of the direct rate",
                     f"{c['under95']} under, lowest {c['min_rate'] * 8 / 1000:.1f} kbit/s",
                     verdict(c["under95"] == 0)])
    re_ = results.get("reaction")
    if re_:
        ok = sum(1 for d in re_["deaths"] if d <= re_["bound"])
        rows.append(["edge death out of rotation within interval × fall + timeout",
                     f"{ok}/{len(re_['deaths'])}", verdict(ok == len(re_["deaths"]))])
        ok = sum(1 for m in re_["moves"] if m <= 2.0)
        rows.append(["load change reflected within two intervals", f"{ok}/{len(re_['moves'])}",
                     verdict(ok == len(re_["moves"]))])
    pl = results.get("polling")
    if pl:
        rows.append([f"{pl['edges']} edges polled each second under 5% of one core",
                     f"{pl['share'] * 100:.2f}%", verdict(pl["share"] < 0.05)])
    report.table("Targets", ["target", "measured", ""], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--castgate", required=True, help="castgate binary (release build)")
    ap.add_argument("--bare", default=None, help="examples/bare_front binary (release build)")
    ap.add_argument("--quick", action="store_true", help="shorter runs, to check the harness")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections")
    ap.add_argument("--out", default=None, help="Markdown output file")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SECTIONS:
            ap.error(f"unknown section {s}; sections: {','.join(SECTIONS)}")
    if os.cpu_count() < 2:
        sys.exit("scripts/bench needs 2 CPUs: the server on CPU 0, the load on CPU 1")
    for tool in ("haproxy", "nginx", "wrk", "oha", "icecast2", "ffmpeg", "taskset"):
        if tool == "oha" and "latency" not in only:
            continue
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/bench (it installs it)")
    args.duration = 5 if args.quick else 20
    args.idle = 5000
    args.listeners = 300 if args.quick else 1000
    args.window = 8 if args.quick else 20
    args.after = 10 if args.quick else 60
    args.trials = 5 if args.quick else 20
    args.poll_edges = 1000
    args.poll_seconds = 10 if args.quick else 30
    raise_nofile()

    root = tempfile.mkdtemp(prefix="castgate-bench-")
    os.chmod(root, 0o755)
    started = time.time()
    report = Report()
    results = {}
    procs = []
    try:
        edge = Icecast("edge1", root).start()
        edge2 = Icecast("edge2", root).start()
        procs += [edge, edge2]
        castgate = Castgate(args.castgate, root, [("edge1", f"http://{HOST}:{edge.port}"),
                                                  ("edge2", f"http://{HOST}:{edge2.port}")])
        castgate.start()
        procs.append(castgate.proc)
        haproxy = Haproxy(root, edge).start()
        procs.append(haproxy.proc)
        nginx = Nginx(root, edge).start()
        procs.append(nginx.proc)
        servers = {"castgate": castgate, "haproxy": haproxy, "nginx": nginx}
        for name, srv in servers.items():
            status, _, body = http_get(srv.port, srv.playlist)
            if status != 200 or b"#EXTM3U" not in body:
                raise RuntimeError(f"{name} answered {status} to {srv.playlist}: {body[:200]!r}")
        floors = {}
        if args.bare and ("throughput" in only or "idle" in only):
            floors = {
                "pingora-proxy (bare)": BareFront(args.bare, root, app=False).start(),
                "pingora-core app (bare)": BareFront(args.bare, root, app=True).start(),
            }
            procs += [f.proc for f in floors.values()]
        if "throughput" in only:
            quiet = Castgate(args.castgate, root, [("edge1", f"http://{HOST}:{edge.port}"),
                                                   ("edge2", f"http://{HOST}:{edge2.port}")],
                             name="castgate-nolog", access=False).start()
            procs.append(quiet.proc)
            section_throughput(args, servers, floors, report, results,
                               {"castgate (access log off)": quiet})
            quiet.proc.kill()
        if "latency" in only:
            section_latency(args, servers, report, results)
        if "churn" in only:
            section_churn(args, servers, report, results)
        if "idle" in only:
            section_idle(args, servers, floors, report, results)
        if "proxy" in only:
            # Fresh servers: the sections before leave their heaps grown,
            # and the RSS figures here are growth over a clean baseline.
            for p in [castgate.proc, haproxy.proc, nginx.proc] + [f.proc for f in floors.values()]:
                p.kill()
            castgate = Castgate(args.castgate, root, [("edge1", f"http://{HOST}:{edge.port}"),
                                                      ("edge2", f"http://{HOST}:{edge2.port}")],
                                name="castgate-proxy").start()
            haproxy = Haproxy(root, edge).start()
            procs += [castgate.proc, haproxy.proc]
            time.sleep(2)
            section_proxy(args, castgate, haproxy, edge, report, results)
        for p in procs:
            p.kill()
        procs = []
        if "reaction" in only:
            section_reaction(args, args.castgate, root, report, results)
        if "polling" in only:
            section_polling(args, args.castgate, root, report, results)
        summary(results, report)
    finally:
        for p in procs:
            p.kill()
    versions = {
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": "wrk 4.1",
        "oha": subprocess.run(["oha", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("oha") else "oha not used",
    }
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = (
        f"## scripts/bench{' --quick' if args.quick else ''}"
        f"{'' if only == SECTIONS else ' --only ' + ','.join(only)}, "
        f"{datetime.date.today().isoformat()}\n\n"
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
        f"server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}; one worker thread each; "
        f"castgate with its defaults (access log on; also measured with it off), HAProxy and nginx without access logs. Took {(time.time() - started) / 60:.1f} min.\n"
        f"Peers: {versions['haproxy']}; {versions['nginx']}; {versions['oha']}.\n"
    )
    text = head + "\n" + report.text() + "\n"
    out = args.out or os.path.join("target", "bench", f"bench-{datetime.date.today().isoformat()}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(out.replace(".md", ".json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"\nwritten to {out}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
