"""Redis credentials and TLS: passwords and ACL users in the URL, rediss:// with certificate checks."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import trustme

from tests.conftest import Server, Simulator, graphql, server_env
from tests.tcp_proxy import TcpProxy
from weathernote.redis.embedded import EmbeddedRedis

QUERY = "{ current(lat: 59.33, lon: 18.07) { cached } }"


def test_password_and_acl_user_in_the_url_never_logged(tmp_path: Path, simulator: Simulator, clean: Simulator) -> None:
    own = EmbeddedRedis(
        tmp_path / "redis",
        persistent=False,
        extra_config={"requirepass": "default-pass-41", "user": "weather on >acl-pass-93 ~* &* +@all"},
    )
    own.start()
    try:
        for url in (
            f"redis://:default-pass-41@127.0.0.1:{own.port}/0",
            f"redis://weather:acl-pass-93@127.0.0.1:{own.port}/0",
        ):
            srv = Server(server_env(url, simulator, log_level="info"))
            try:
                assert graphql(srv.url, QUERY).status_code == 200
                assert graphql(srv.url, QUERY).json()["data"]["current"]["cached"] is True
                assert httpx.get(f"{srv.url}/health").json()["redis"] == "ok"
            finally:
                srv.stop()
            logs = srv.logs()
            assert "Redis at redis://" in logs
            assert "default-pass-41" not in logs and "acl-pass-93" not in logs
        wrong = Server(server_env(f"redis://:wrong@127.0.0.1:{own.port}/0", simulator), ready=False)
        try:
            assert httpx.get(f"{wrong.url}/health").json()["redis"] == "down"
            assert httpx.get(f"{wrong.url}/ready").status_code == 503
            assert graphql(wrong.url, QUERY).status_code == 200  # degraded, still serving
        finally:
            wrong.stop()
    finally:
        own.stop()


def test_tls_with_certificate_checks(tmp_path: Path, redis_url: str, simulator: Simulator, clean: Simulator) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost", "127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    impostor_file = tmp_path / "impostor.pem"
    trustme.CA().cert_pem.write_to_path(str(impostor_file))
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    terminator = TcpProxy("127.0.0.1", redis_port, ssl=server_context)
    try:
        trusted = Server(server_env(f"rediss://localhost:{terminator.port}/0?ssl_ca_certs={ca_file}", simulator))
        try:
            assert graphql(trusted.url, QUERY).json()["data"]["current"]["cached"] is False
            assert graphql(trusted.url, QUERY).json()["data"]["current"]["cached"] is True
            assert httpx.get(f"{trusted.url}/health").json()["redis"] == "ok"
        finally:
            trusted.stop()
        untrusted = Server(
            server_env(f"rediss://localhost:{terminator.port}/0?ssl_ca_certs={impostor_file}", simulator), ready=False
        )
        try:
            assert httpx.get(f"{untrusted.url}/health").json()["redis"] == "down"
            assert httpx.get(f"{untrusted.url}/ready").status_code == 503
        finally:
            untrusted.stop()
    finally:
        terminator.close()
