"""Who a client is: hashed ids, addresses grouped by IPv6 prefix, forwarded addresses from trusted proxies
only, and a secret strong enough to share."""

from __future__ import annotations

import pytest

from weathernote.fairuse import Identifier, secret_problem

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_an_ipv6_client_counts_as_its_prefix_not_one_of_its_addresses() -> None:
    identifier = Identifier(SECRET)
    one = identifier.identify("2001:db8:1:2:aaaa::1", {})
    rotated = identifier.identify("2001:db8:1:2:ffff:ffff:ffff:fff0", {})
    neighbour = identifier.identify("2001:db8:1:3::1", {})
    assert one.address == rotated.address == one.client, "one /64, one address, one client without an id"
    assert neighbour.address != one.address
    narrower = Identifier(SECRET, ipv6_prefix=128)
    assert narrower.identify("2001:db8:1:2::1", {}).address != narrower.identify("2001:db8:1:2::2", {}).address


def test_an_ipv4_mapped_address_is_its_ipv4_address() -> None:
    identifier = Identifier(SECRET)
    assert identifier.identify("::ffff:203.0.113.7", {}).address == identifier.identify("203.0.113.7", {}).address


def test_forwarded_for_counts_only_from_trusted_proxies_and_by_prefix() -> None:
    identifier = Identifier(SECRET, ["10.0.0.0/8"])
    forwarded = {"x-forwarded-for": "2001:db8:5:6::9, 10.1.2.3"}
    through_proxy = identifier.identify("10.9.9.9", forwarded)
    assert through_proxy.address == identifier.identify("2001:db8:5:6::1", {}).address
    direct = identifier.identify("198.51.100.1", forwarded)
    assert direct.address == identifier.identify("198.51.100.1", {}).address, "an untrusted peer chooses nothing"


def test_a_client_id_is_its_own_identity_at_its_address() -> None:
    identifier = Identifier(SECRET)
    first = identifier.identify("203.0.113.7", {"x-client-id": "device-1"})
    second = identifier.identify("203.0.113.7", {"x-client-id": "device-2"})
    assert first.client != second.client and first.address == second.address


@pytest.mark.parametrize(
    "secret",
    [None, "", "short", "REPLACE-ME-with-openssl-rand-hex-32", "change-me-change-me-change-me-change-me", "a" * 64],
)
def test_missing_short_plain_or_placeholder_secrets_are_refused(secret: str | None) -> None:
    assert secret_problem(secret) is not None


def test_a_random_secret_is_accepted() -> None:
    assert secret_problem(SECRET) is None
