"""Who is asking: the client id (x-client-id, else the IP), hashed before anything sees it.

Ids are hashed with keyed BLAKE3 under a server secret: without the key, a
stored hash cannot be reversed by hashing every IPv4 address, and 128 bits
keep 500,000 devices far from any collision. Raw ids and addresses never
reach Redis or the logs.

An IPv6 client holds a whole prefix (a /64 is one home or one phone), so its
address counts as that prefix (`ipv6_prefix`), not as one of 2^64 addresses it
could rotate through. X-Forwarded-For is believed only from the trusted
proxies, walking back from the nearest hop.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import blake3

_KEY_CONTEXT = "weathernote 2026 client id hashing key"
_HASH_BYTES = 16
_MAX_CLIENT_ID = 128


@dataclass(frozen=True, slots=True)
class Identity:
    """Who asks, hashed: the client (its id, else its address) and its address."""

    client: str  # hash of the client id (or of the address when there is none)
    address: str  # hash of the client's address, for the per-address limit


class Identifier:
    """Turns a peer and its headers into an `Identity` under the server's secret key."""

    def __init__(self, secret: str, trusted_proxies: Iterable[str] = (), *, ipv6_prefix: int = 64) -> None:
        # Any secret string becomes the 32-byte key BLAKE3's keyed mode needs.
        self._key = blake3.blake3(secret.encode(), derive_key_context=_KEY_CONTEXT).digest()
        self._trusted = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]
        self.ipv6_prefix = ipv6_prefix

    def hash(self, kind: str, value: str) -> str:
        return blake3.blake3(f"{kind}:{value}".encode(), key=self._key).hexdigest(length=_HASH_BYTES)

    def address(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address: the peer, or what a trusted proxy says it forwarded for."""
        address = peer or "unknown"
        forwarded = headers.get("x-forwarded-for")
        if not forwarded or not self._is_trusted(address):
            return address
        # Walk from the nearest hop back: the first address not one of our proxies is the client.
        for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
            if not self._is_trusted(hop):
                return hop if _is_ip(hop) else address
        return address

    def identify(self, peer: str | None, headers: Mapping[str, str]) -> Identity:
        address = self.group(self.address(peer, headers))
        address_hash = self.hash("ip", address)
        client_id = headers.get("x-client-id", "").strip()
        if client_id and len(client_id) <= _MAX_CLIENT_ID and client_id.isprintable():
            return Identity(self.hash("id", client_id), address_hash)
        return Identity(address_hash, address_hash)

    def group(self, address: str) -> str:
        """What an address counts as: itself for IPv4, its prefix for IPv6 (IPv4-mapped: the IPv4)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, self.ipv6_prefix), strict=False))
        return address

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


MIN_SECRET_CHARS = 32
_PLACEHOLDER_WORDS = ("replace", "change", "example", "placeholder", "secret", "password", "test", "xxxx")


def secret_problem(secret: str | None) -> str | None:
    """What is wrong with a client-id secret for a deployment of several instances, or None.

    Missing, each instance would hash under a key of its own (limits multiplied by
    instances); short or a placeholder, the hashes of every IPv4 address could be
    computed by anyone who guesses it.
    """
    if not secret:
        return "WEATHERNOTE_CLIENT_ID_SECRET is not set"
    if len(secret) < MIN_SECRET_CHARS or len(set(secret)) < 8:
        return f"WEATHERNOTE_CLIENT_ID_SECRET is too short or too plain (at least {MIN_SECRET_CHARS} random characters)"
    if any(word in secret.lower() for word in _PLACEHOLDER_WORDS):
        return "WEATHERNOTE_CLIENT_ID_SECRET is a placeholder"
    return None


def load_or_create_secret(path: Path) -> str:
    """The embedded deployment's secret: generated once, kept beside its data."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_hex(32)
        path.touch(mode=0o600)
        path.write_text(secret + "\n")
        return secret
