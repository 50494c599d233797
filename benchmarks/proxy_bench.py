"""Proxy benchmark: nginx vs a naive Python proxy vs onegate, on one machine, in one run.

Usage::

    python benchmarks/proxy_bench.py [--duration 10] [--only nginx,naive,onegate]
                                     [--out benchmarks/results]

An upstream nginx (pinned to core 1) serves a fixed JSON body. Each proxy in turn is pinned to
core 0 and put in front of that same upstream; wrk (pinned to core 1) loads it at 32 and then
at 1 connection, after a warm-up. A "direct" row loads the upstream itself, for reference.
Results go to ``<out>/proxy.json`` and ``<out>/proxy.md``; only ratios within one run are
meaningful. Generated configs, pid files and logs live in ``benchmarks/.work/proxy/``.

``--tls`` runs the TLS comparison instead: onegate in front of the same nginx upstream over
plaintext and over TLS (a second nginx server block with a certificate from a CA this script
makes; onegate verifies it with ``tls.ca_file``), alternated, ``TLS_ROUNDS`` times each; the
report (``<out>/proxy_tls.md`` and ``.json``) gives the median of each figure. The listener
stays plain HTTP: this measures the upstream side only.

Needs root only if nginx or wrk are missing (they are installed with apt-get).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work" / "proxy"  # git-ignored
DEFAULT_OUT = BENCH_DIR / "results"

PROXY_CORE = 0  # the proxy under test
LOAD_CORE = 1  # the upstream nginx and wrk
HOST = "127.0.0.1"
BENCH_PATH = "/api/bench"
CONNECTIONS = (32, 1)
WARMUP_SECONDS = 3
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
DECOY_ROUTES = 50
PROXIES = ("nginx", "naive", "onegate", "onegate-edge")

# The targets onegate is held to, all within one run.
TARGET_RPS_VS_NGINX = 0.20  # req/s at 32 connections, as a fraction of nginx's
TARGET_RPS_VS_NAIVE = 30.0  # req/s at 32 connections, as a multiple of the naive proxy's
TARGET_P50_SLACK_MS = 0.25  # p50 at 1 connection may exceed nginx's by at most this
# With JWT auth, a rate limit, metrics and the access log all on ("onegate-edge").
TARGET_EDGE_RPS_VS_NGINX = 0.15

# The edge variant authenticates every request with this HS256 token.
BENCH_SECRET_ENV = "ONEGATE_BENCH_JWT_SECRET"
BENCH_SECRET = "bench-secret-" + "x" * 32

# ~170 bytes of JSON, served by the upstream for every path.
UPSTREAM_BODY = json.dumps(
    {
        "id": 4711,
        "service": "onegate-bench",
        "status": "ok",
        "region": "local",
        "items": [1, 2, 3, 4, 5],
        "tags": ["alpha", "beta", "gamma"],
        "message": "fixed payload from the upstream nginx",
    },
    separators=(",", ":"),
)

NGINX_UPSTREAM_CONF = Template("""\
worker_processes 1;
daemon off;
pid $work/upstream.pid;
error_log $work/upstream.error.log warn;

events { worker_connections 1024; }

http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/upstream-temp/body;
    proxy_temp_path $work/upstream-temp/proxy;

    server {
        listen $host:$port;
        location / {
            default_type application/json;
            return 200 '$body';
        }
    }
}
""")

NGINX_TLS_UPSTREAM_CONF = Template("""\
worker_processes 1;
daemon off;
pid $work/upstream-tls.pid;
error_log $work/upstream-tls.error.log warn;

events { worker_connections 1024; }

http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $work/upstream-tls-temp/body;
    proxy_temp_path $work/upstream-tls-temp/proxy;

    server {
        listen $host:$port ssl;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        location / {
            default_type application/json;
            return 200 '$body';
        }
    }
}
""")

NGINX_PROXY_CONF = Template("""\
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.error.log warn;

events { worker_connections 1024; }

http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-temp/body;
    proxy_temp_path $work/nginx-temp/proxy;

    upstream bench {
        server $host:$upstream_port;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen $host:$port;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
""")


class BenchError(Exception):
    """A step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- tools -----------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    return shutil.which(name, path=search)


def ensure_tools() -> None:
    """Install nginx and wrk with apt-get when they are missing."""
    if find_tool("taskset") is None:
        raise BenchError("taskset not found (it is in util-linux)")
    missing = [tool for tool in ("nginx", "wrk") if find_tool(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(f"{' and '.join(missing)} missing; run as root to apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"{', '.join(missing)} missing: apt-get update")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    packages = []
    if "nginx" in missing:
        light = subprocess.run(
            ["apt-cache", "show", "nginx-light"], capture_output=True, check=False
        )
        packages.append("nginx-light" if light.returncode == 0 and light.stdout else "nginx")
    if "wrk" in missing:
        packages.append("wrk")
    log(f"apt-get install -y {' '.join(packages)}")
    subprocess.run(["apt-get", "install", "-y", *packages], check=True, env=env)
    if "nginx" in missing:
        # The package may start a system nginx on port 80; the benchmark wants none running.
        if Path("/run/systemd/system").exists():
            stop = ["systemctl", "stop", "nginx"]
        else:
            stop = ["service", "nginx", "stop"]
        subprocess.run(stop, capture_output=True, check=False)
    still_missing = [tool for tool in ("nginx", "wrk") if find_tool(tool) is None]
    if still_missing:
        raise BenchError(f"still missing after apt-get install: {', '.join(still_missing)}")


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def machine_info(duration: int) -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "nginx": tool_version([find_tool("nginx") or "nginx", "-v"]),
        "wrk": tool_version([find_tool("wrk") or "wrk", "-v"]).split(" Copyright")[0],
        "git_commit": git.stdout.strip() or None,
        "duration_s": duration,
        "warmup_s": WARMUP_SECONDS,
        "proxy_core": PROXY_CORE,
        "load_core": LOAD_CORE,
        "upstream_body_bytes": len(UPSTREAM_BODY),
    }


# --- processes -------------------------------------------------------------------------------


class Service:
    """A child process pinned to one core, in its own process group, logging to a file.

    ``<work>/<name>.pid`` holds its pid while it runs (nginx writes the same file itself), so a
    later run can find and stop it if this one dies without cleaning up.
    """

    def __init__(
        self, name: str, argv: list[str], core: int, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = ["taskset", "-c", str(core), *argv]
        self.env = env
        self.log_path = WORK_DIR / f"{name}.log"
        self.pid_path = WORK_DIR / f"{name}.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log(f"{self.name}: starting: {' '.join(self.argv)}")
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=WORK_DIR,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.process.pid}\n")

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process_group(self.process.pid, self.process)
        self.pid_path.unlink(missing_ok=True)
        self.process = None

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def stop_process_group(pgid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after STOP_TIMEOUT."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if process is not None:
                process.poll()  # reap the leader so the group can empty
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)


def kill_stale_processes() -> None:
    """Stop processes left behind by an earlier run that was killed outright (via pid files)."""
    for pid_path in WORK_DIR.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            # Only processes this harness started: they run in, or are configured from, WORK_DIR.
            if os.readlink(f"/proc/{pid}/cwd") == str(WORK_DIR) or str(WORK_DIR) in cmdline:
                log(f"stopping stale process {pid} from an earlier run: {cmdline.strip()}")
                stop_process_group(os.getpgid(pid))
        pid_path.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bench_token() -> str:
    import jwt  # PyJWT, one of onegate's own dependencies

    claims = {
        "iss": "bench-idp",
        "aud": "onegate-bench",
        "sub": "bench-user",
        "scope": "bench",
        "exp": int(time.time()) + 3600,
    }
    return jwt.encode(claims, BENCH_SECRET, algorithm="HS256", headers={"kid": "bench"})


def http_get(
    port: int,
    path: str = BENCH_PATH,
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(service: Service, port: int) -> None:
    """Poll until an HTTP GET on the port gets any response; fail early if the process exits."""
    deadline = time.monotonic() + READY_TIMEOUT
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = service.exit_code()
        if code is not None:
            raise BenchError(
                f"exited with code {code} before serving; see {service.log_path}\n"
                f"{service.log_tail()}"
            )
        try:
            http_get(port, timeout=1.0)
            return
        except (OSError, http.client.HTTPException) as exc:
            last_error = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise BenchError(
        f"not serving on port {port} after {READY_TIMEOUT:.0f} s (last error: {last_error}); "
        f"see {service.log_path}\n{service.log_tail()}"
    )


def verify_body(port: int, headers: dict[str, str] | None = None) -> None:
    """One request through the proxy must return the upstream's status and body unchanged."""
    try:
        status, body = http_get(port, timeout=5.0, headers=headers)
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"check request failed: {exc}") from exc
    if status != 200 or body != UPSTREAM_BODY.encode():
        raise BenchError(
            f"check request: expected 200 with the upstream's {len(UPSTREAM_BODY)}-byte body, "
            f"got {status} with {body[:120]!r}"
        )


# --- the contenders --------------------------------------------------------------------------


def nginx_service(name: str, template: Template, core: int, **values: Any) -> Service:
    (WORK_DIR / f"{name}-temp").mkdir(exist_ok=True)
    conf = WORK_DIR / f"{name}.conf"
    conf.write_text(template.substitute(work=WORK_DIR, host=HOST, **values))
    nginx = find_tool("nginx") or "nginx"
    error_log = WORK_DIR / f"{name}.error.log"
    error_log.write_text("")  # nginx appends; keep only this run's errors
    argv = [nginx, "-p", f"{WORK_DIR}/", "-e", str(error_log), "-c", str(conf)]
    return Service(name, argv, core)


def upstream_service(port: int) -> Service:
    return nginx_service("upstream", NGINX_UPSTREAM_CONF, LOAD_CORE, port=port, body=UPSTREAM_BODY)


def nginx_proxy_service(port: int, upstream_port: int) -> Service:
    return nginx_service(
        "nginx", NGINX_PROXY_CONF, PROXY_CORE, port=port, upstream_port=upstream_port
    )


def naive_service(port: int, upstream_port: int) -> Service:
    argv = [
        sys.executable, "-m", "uvicorn", "naive_proxy:app",
        "--app-dir", str(BENCH_DIR),
        "--host", HOST, "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log", "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "NAIVE_PROXY_UPSTREAM": f"http://{HOST}:{upstream_port}"}
    return Service("naive", argv, PROXY_CORE, env)


EDGE_SECTIONS = f"""\
auth:
  default_policy: authenticated
  issuers:
    - type: jwt
      name: bench-idp
      issuer: bench-idp
      audiences: [onegate-bench]
      algorithms: [HS256]
      keys: [{{kid: bench, secret_env: {BENCH_SECRET_ENV}}}]
rate_limits:
  policies: [{{name: per-principal, key: principal, limit: 1000000000, window_seconds: 60}}]
  default: [per-principal]
observability: {{metrics: {{enabled: true}}, access_log: {{enabled: true}}}}
"""
PLAIN_SECTIONS = "observability: {metrics: {enabled: false}, access_log: {enabled: false}}\n"


def onegate_config(
    port: int, upstream_port: int, edge: bool = False, tls_ca: Path | None = None
) -> str:
    """Routing, header hygiene, request ids and breakers are always on; ``edge`` adds JWT
    auth, a rate limit, metrics and the access log; ``tls_ca`` reaches the upstream over TLS,
    trusting that CA file."""
    scheme = "https" if tls_ca is not None else "http"
    tls = f", tls: {{ca_file: {tls_ca}}}" if tls_ca is not None else ""
    lines = [
        f"server: {{host: {HOST}, port: {port}, workers: 1, watch_config: false}}",
        "upstreams:",
        f'  bench: {{targets: ["{scheme}://{HOST}:{upstream_port}"]{tls}}}',
        "routes:",
        "  - {name: bench, match: {prefix: /api}, upstream: bench}",
    ]
    # Decoys to the same upstream, so routing is not trivial.
    lines += [
        f"  - {{name: svc{i}, match: {{prefix: /svc{i}}}, upstream: bench}}"
        for i in range(DECOY_ROUTES)
    ]
    return "\n".join(lines) + "\n" + (EDGE_SECTIONS if edge else PLAIN_SECTIONS)


def onegate_service(
    name: str, port: int, upstream_port: int, binary: Path, tls_ca: Path | None = None
) -> Service:
    if not binary.exists():
        raise BenchError(f"{binary} not found; install onegate into this venv (pip install -e .)")
    config = WORK_DIR / f"{name}.yaml"
    config.write_text(
        onegate_config(port, upstream_port, edge=name == "onegate-edge", tls_ca=tls_ca)
    )
    # Environment overrides would redirect the upstream; keep the generated config authoritative.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEGATE_")}
    env[BENCH_SECRET_ENV] = BENCH_SECRET
    argv = [str(binary), "serve", "--config", str(config), "--workers", "1"]
    return Service(name, argv, PROXY_CORE, env)


# --- load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """One measured wrk run."""

    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: dict[str, int]

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non_2xx_3xx == 0 and not any(self.socket_errors.values())


@dataclass
class Row:
    """Everything measured for one contender."""

    name: str
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    loads: dict[int, Load] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.status == "ok" and all(load.valid for load in self.loads.values())

    def rps(self, connections: int) -> float | None:
        load = self.loads.get(connections)
        return load.rps if load and self.status == "ok" else None

    def p50(self, connections: int) -> float | None:
        load = self.loads.get(connections)
        return load.p50_ms if load and self.status == "ok" else None


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency line in wrk output:\n{output}")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)], 6)


def parse_wrk(output: str, connections: int) -> Load:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    requests = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rps is None or requests is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    kinds = ("connect", "read", "write", "timeout")
    return Load(
        connections=connections,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        requests=int(requests.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={k: int(v) for k, v in zip(kinds, errors.groups(), strict=True)}
        if errors
        else dict.fromkeys(kinds, 0),
    )


def run_wrk(
    port: int, connections: int, seconds: int, headers: dict[str, str] | None = None
) -> Load:
    wrk = find_tool("wrk") or "wrk"
    argv = [
        "taskset", "-c", str(LOAD_CORE),
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://{HOST}:{port}{BENCH_PATH}")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=seconds + 30
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {seconds + 30} s") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout, connections)


def measure(
    row: Row,
    port: int,
    duration: int,
    service: Service | None,
    headers: dict[str, str] | None = None,
) -> None:
    """Check the body, then for each connection count: warm up, then measure."""
    verify_body(port, headers)
    for connections in CONNECTIONS:
        log(f"{row.name}: {connections} connection(s): {WARMUP_SECONDS} s warm-up")
        run_wrk(port, connections, WARMUP_SECONDS, headers)
        log(f"{row.name}: {connections} connection(s): {duration} s measured run")
        load = run_wrk(port, connections, duration, headers)
        row.loads[connections] = load
        if service is not None and service.exit_code() is not None:
            raise BenchError(f"exited with code {service.exit_code()} during the run")
        flag = "" if load.valid else "  INVALID: non-2xx or socket errors"
        log(
            f"{row.name}: c={connections}: {load.rps:,.0f} req/s, p50 {load.p50_ms:.3f} ms, "
            f"p99 {load.p99_ms:.3f} ms{flag}"
        )


def bench_proxy(name: str, upstream_port: int, duration: int, onegate_bin: Path) -> Row:
    """Start one proxy, measure it, stop it. Any failure is recorded in the row, not raised."""
    row = Row(name)
    port = free_port()
    service: Service | None = None
    try:
        if name == "nginx":
            service = nginx_proxy_service(port, upstream_port)
        elif name == "naive":
            service = naive_service(port, upstream_port)
        else:
            service = onegate_service(name, port, upstream_port, onegate_bin)
        service.start()
        wait_ready(service, port)
        headers = {"Authorization": f"Bearer {bench_token()}"} if name == "onegate-edge" else None
        measure(row, port, duration, service, headers)
    except (BenchError, OSError) as exc:
        row.status, row.error = "failed", str(exc)
        log(f"{name}: FAILED: {exc}")
    finally:
        if service is not None:
            service.stop()
    return row


# --- TLS to the upstream ------------------------------------------------------------------------

TLS_ROUNDS = 3
TLS_VARIANTS = ("plaintext", "tls")


def make_tls_files() -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``HOST`` signed by it: (ca.pem, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = WORK_DIR / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    valid = (now - timedelta(hours=1), now + timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "onegate bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def bench_tls(
    plain_port: int, tls_port: int, ca_file: Path, duration: int, onegate_bin: Path
) -> dict[str, list[Row]]:
    """onegate to the plaintext and to the TLS upstream, alternated, ``TLS_ROUNDS`` times."""
    runs: dict[str, list[Row]] = {variant: [] for variant in TLS_VARIANTS}
    for round_number in range(1, TLS_ROUNDS + 1):
        for variant in TLS_VARIANTS:
            name = f"onegate-{variant}"
            row = Row(name)
            port = free_port()
            tls = variant == "tls"
            service = onegate_service(
                name,
                port,
                tls_port if tls else plain_port,
                onegate_bin,
                tls_ca=ca_file if tls else None,
            )
            log(f"round {round_number}/{TLS_ROUNDS}: {name}")
            try:
                service.start()
                wait_ready(service, port)
                measure(row, port, duration, service)
            except (BenchError, OSError) as exc:
                row.status, row.error = "failed", str(exc)
                log(f"{name}: FAILED: {exc}")
            finally:
                service.stop()
            runs[variant].append(row)
    return runs


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def tls_summary(runs: dict[str, list[Row]]) -> dict[str, dict[str, Any]]:
    """Per variant: the median of each figure over its valid runs, and every run's req/s."""
    summary: dict[str, dict[str, Any]] = {}
    for variant, rows in runs.items():
        valid = [row for row in rows if row.valid]
        figures: dict[str, Any] = {"runs": len(rows), "valid_runs": len(valid)}
        for connections in CONNECTIONS:
            if valid:
                rps = [row.loads[connections].rps for row in valid]
                p50 = [row.loads[connections].p50_ms for row in valid]
                figures[f"rps@{connections}"] = _median(rps)
                figures[f"p50_ms@{connections}"] = _median(p50)
                figures[f"rps_runs@{connections}"] = rps
        summary[variant] = figures
    return summary


def tls_markdown(summary: dict[str, dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    out = [
        "# Proxy benchmark: TLS to the upstream",
        "",
        f"{machine['date']} · {machine['cpu_model']} · {machine['nproc']} CPUs · "
        f"Python {machine['python']} · {machine['nginx']} · commit {machine['git_commit']}",
        "",
        f"`{command}` — onegate (one worker, core {PROXY_CORE}) in front of one nginx upstream "
        f"(core {LOAD_CORE}, with wrk), plaintext and TLS alternated, {TLS_ROUNDS} runs each of "
        f"{machine['duration_s']} s after a {machine['warmup_s']} s warm-up; medians.",
        "",
        "| upstream | req/s @32 | p50 @32 (ms) | req/s @1 | p50 @1 (ms) | req/s @32, each run |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for variant in TLS_VARIANTS:
        figures = summary[variant]
        if not figures["valid_runs"]:
            out.append(f"| {variant} | FAILED | | | | |")
            continue
        each = ", ".join(f"{value:,.0f}" for value in figures["rps_runs@32"])
        out.append(
            f"| {variant} | {figures['rps@32']:,.0f} | {figures['p50_ms@32']:.3f} | "
            f"{figures['rps@1']:,.0f} | {figures['p50_ms@1']:.3f} | {each} |"
        )
    plain, tls = summary["plaintext"], summary["tls"]
    if plain["valid_runs"] and tls["valid_runs"]:
        out += [
            "",
            f"TLS vs plaintext: req/s @32 {tls['rps@32'] / plain['rps@32']:.2f}x, "
            f"p50 @1 +{tls['p50_ms@1'] - plain['p50_ms@1']:.3f} ms.",
        ]
    return "\n".join(out) + "\n"


def run_tls(args: argparse.Namespace, command: str) -> int:
    upstreams: list[Service] = []
    try:
        ensure_tools()
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        (WORK_DIR / "upstream-tls-temp").mkdir(exist_ok=True)
        kill_stale_processes()
        machine = machine_info(args.duration)
        ca_file, cert, key = make_tls_files()
        plain_port, tls_port = free_port(), free_port()
        plain = upstream_service(plain_port)
        secure = nginx_service(
            "upstream-tls",
            NGINX_TLS_UPSTREAM_CONF,
            LOAD_CORE,
            port=tls_port,
            body=UPSTREAM_BODY,
            cert=cert,
            key=key,
        )
        upstreams = [plain, secure]
        plain.start()
        wait_ready(plain, plain_port)
        secure.start()
        time.sleep(0.5)  # a TLS port: wait_ready speaks plain HTTP; onegate checks it below
        if secure.exit_code() is not None:
            raise BenchError(f"the TLS upstream nginx exited; see {secure.log_path}")
        runs = bench_tls(plain_port, tls_port, ca_file, args.duration, args.onegate_bin)
    except (BenchError, OSError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; processes stopped, no results written", file=sys.stderr)
        return 130
    finally:
        for service in upstreams:
            service.stop()
    summary = tls_summary(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    report = tls_markdown(summary, machine, command)
    (args.out / "proxy_tls.md").write_text(report)
    document = {"machine": machine, "command": command, "summary": summary}
    document["runs"] = {
        variant: [{"status": r.status, "error": r.error, "valid": r.valid} for r in rows]
        for variant, rows in runs.items()
    }
    (args.out / "proxy_tls.json").write_text(json.dumps(document, indent=2) + "\n")
    print(report)
    log(f"wrote {args.out / 'proxy_tls.md'} and {args.out / 'proxy_tls.json'}")
    return 0 if all(row.valid for rows in runs.values() for row in rows) else 1


# --- report ----------------------------------------------------------------------------------

LABELS = {
    "direct": "direct to upstream (reference)",
    "nginx": "nginx",
    "naive": "naive (Starlette + httpx)",
    "onegate": "onegate (routing, header hygiene, request ids, breaker)",
    "onegate-edge": "onegate + JWT auth, rate limit, metrics, access log",
}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def markdown(rows: dict[str, Row], machine: dict[str, Any], command: str) -> str:
    nginx, naive = rows.get("nginx"), rows.get("naive")
    nginx_rps = nginx.rps(32) if nginx else None
    naive_rps = naive.rps(32) if naive else None
    out = [
        "# Proxy benchmark",
        "",
        f"{machine['date']} · {machine['cpu_model']} · {machine['nproc']} CPUs · "
        f"{machine['kernel']} · Python {machine['python']} · {machine['nginx']} · "
        f"{machine['wrk']} · commit {machine['git_commit']}",
        "",
        f"`{command}` — {machine['duration_s']} s per measured run after a "
        f"{machine['warmup_s']} s warm-up; proxy on core {PROXY_CORE}, upstream nginx and wrk on "
        f"core {LOAD_CORE}; GET {BENCH_PATH}, {machine['upstream_body_bytes']}-byte JSON body.",
        "",
        "| proxy | req/s @32 | p50 @32 (ms) | p99 @32 (ms) | req/s @1 | p50 @1 (ms) "
        "| p99 @1 (ms) | req/s vs nginx | req/s vs naive |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for name, row in rows.items():
        label = LABELS[name]
        if row.status != "ok":
            out.append(f"| {label} | FAILED | | | | | | | |")
            notes.append(f"- {label}: failed: {(row.error or '').splitlines()[0]}")
            continue
        if not row.valid:
            label += " (INVALID)"
            for load in row.loads.values():
                if not load.valid:
                    notes.append(
                        f"- {LABELS[name]} @{load.connections}: {load.non_2xx_3xx} non-2xx/3xx "
                        f"responses, socket errors {load.socket_errors}"
                    )
        cells = [label]
        for connections in CONNECTIONS:
            load = row.loads[connections]
            cells += [f"{load.rps:,.0f}", f"{load.p50_ms:.3f}", f"{load.p99_ms:.3f}"]
        rps = row.rps(32)
        cells += [_ratio(rps, nginx_rps), _ratio(rps, naive_rps)]
        out.append("| " + " | ".join(cells) + " |")
    if notes:
        out += ["", *notes]
    out += ["", "Targets (onegate, this run):", "", *targets(rows)]
    return "\n".join(out) + "\n"


def targets(rows: dict[str, Row]) -> list[str]:
    """One line per target: met, NOT met, or why it could not be evaluated."""

    def blocker(name: str) -> str | None:
        row = rows.get(name)
        if row is None:
            return f"{name} not run"
        if row.status != "ok":
            return f"{name} failed"
        return None if row.valid else f"{name} run invalid"

    def check(
        text: str,
        base: str,
        test: Callable[[Row, Row], tuple[bool, str]],
        ours: str = "onegate",
    ) -> str:
        why = [reason for reason in (blocker(ours), blocker(base)) if reason]
        if why:
            return f"- {text}: not evaluated ({', '.join(why)})"
        met, detail = test(rows[ours], rows[base])
        return f"- {text}: {'met' if met else 'NOT met'} ({detail})"

    def rps_ratio(minimum: float) -> Callable[[Row, Row], tuple[bool, str]]:
        def test(onegate: Row, base: Row) -> tuple[bool, str]:
            ratio = onegate.loads[32].rps / base.loads[32].rps
            return ratio >= minimum, f"{ratio:.2f}x"

        return test

    def p50_slack(onegate: Row, nginx: Row) -> tuple[bool, str]:
        ours, theirs = onegate.loads[1].p50_ms, nginx.loads[1].p50_ms
        detail = f"onegate {ours:.3f} ms vs nginx {theirs:.3f} ms + {TARGET_P50_SLACK_MS} ms"
        return ours <= theirs + TARGET_P50_SLACK_MS, detail

    return [
        check(
            f"req/s @32 ≥ {TARGET_RPS_VS_NGINX:.2f}x nginx",
            "nginx",
            rps_ratio(TARGET_RPS_VS_NGINX),
        ),
        check(
            f"req/s @32 ≥ {TARGET_RPS_VS_NAIVE:g}x naive", "naive", rps_ratio(TARGET_RPS_VS_NAIVE)
        ),
        check(f"p50 @1 ≤ nginx p50 @1 + {TARGET_P50_SLACK_MS} ms", "nginx", p50_slack),
        check(
            f"edge pipeline on: req/s @32 ≥ {TARGET_EDGE_RPS_VS_NGINX:.2f}x nginx",
            "nginx",
            rps_ratio(TARGET_EDGE_RPS_VS_NGINX),
            ours="onegate-edge",
        ),
    ]


def to_json(rows: dict[str, Row], machine: dict[str, Any], command: str) -> dict[str, Any]:
    proxies = {}
    for name, row in rows.items():
        proxies[name] = {
            "label": LABELS[name],
            "status": row.status,
            "valid": row.valid,
            "error": row.error,
            "connections": {
                str(c): {**asdict(load), "valid": load.valid} for c, load in row.loads.items()
            },
        }
    return {
        "machine": machine,
        "command": command,
        "targets": {
            "rps_vs_nginx_at_32": TARGET_RPS_VS_NGINX,
            "rps_vs_naive_at_32": TARGET_RPS_VS_NAIVE,
            "p50_slack_ms_at_1": TARGET_P50_SLACK_MS,
            "evaluation": targets(rows),
        },
        "proxies": proxies,
    }


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per measured run (default 10)"
    )
    parser.add_argument(
        "--only",
        default=",".join(PROXIES),
        help=f"comma-separated proxies to run, from {','.join(PROXIES)} (default: all)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="compare onegate to a plaintext and to a TLS upstream instead (see above)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results directory (default %(default)s)"
    )
    parser.add_argument(
        "--onegate-bin",
        type=Path,
        default=Path(sys.executable).parent / "onegate",
        help="the onegate console script (default: next to this Python)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(PROXIES))
    if unknown or not args.only:
        parser.error(f"--only takes names from {','.join(PROXIES)}; got {args.only or 'none'}")
    args.only = [name for name in PROXIES if name in args.only]
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python benchmarks/proxy_bench.py", *(argv or sys.argv[1:])])
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on kill as on Ctrl-C
    if not {PROXY_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        print(f"needs cores {PROXY_CORE} and {LOAD_CORE} available", file=sys.stderr)
        return 2
    if args.tls:
        return run_tls(args, command)
    upstream: Service | None = None
    try:
        ensure_tools()
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        kill_stale_processes()
        machine = machine_info(args.duration)

        upstream_port = free_port()
        upstream = upstream_service(upstream_port)
        upstream.start()
        wait_ready(upstream, upstream_port)
        rows = {"direct": Row("direct")}
        measure(rows["direct"], upstream_port, args.duration, upstream)

        for name in args.only:
            rows[name] = bench_proxy(name, upstream_port, args.duration, args.onegate_bin)
            if upstream.exit_code() is not None:
                raise BenchError(f"the upstream nginx exited; see {upstream.log_path}")
    except (BenchError, OSError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; processes stopped, no results written", file=sys.stderr)
        return 130
    finally:
        if upstream is not None:
            upstream.stop()

    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, machine, command)
    (args.out / "proxy.md").write_text(report)
    (args.out / "proxy.json").write_text(
        json.dumps(to_json(rows, machine, command), indent=2, ensure_ascii=False) + "\n"
    )
    print(report)
    log(f"wrote {args.out / 'proxy.md'} and {args.out / 'proxy.json'}")
    return 0 if all(row.status == "ok" for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
