"""The registry's URL policy: how URLs are normalised and which addresses it refuses, without a network."""

import asyncio
import ipaddress

import pytest

from anonymization_api.errors import RefusedUrl
from anonymization_api.registry.url_policy import AllowList, UrlPolicy, normalise_url, why_denied


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("http://2130706433:8081/", "http://127.0.0.1:8081/"),  # decimal
        ("http://0x7f.1:8081", "http://127.0.0.1:8081/"),  # hex, short form
        ("0177.0.0.1:8081", "http://127.0.0.1:8081/"),  # octal
        ("http://127.1:8081/", "http://127.0.0.1:8081/"),
        ("http://0x7F000001:8081/", "http://127.0.0.1:8081/"),
        ("http://[0:0:0:0:0:0:0:1]:8081/", "http://[::1]:8081/"),
        ("http://face:8081/", "http://face:8081/"),  # a name of hex digits stays a name
        ("HTTP://Detection:8081", "http://detection:8081/"),
        ("https://triton.example:443/", "https://triton.example:443/"),
        ("http://[::ffff:127.0.0.1]:8081/", "http://127.0.0.1:8081/"),  # IPv4-mapped: the same socket
        ("http://[::FFFF:7f00:1]:8081", "http://127.0.0.1:8081/"),
        ("http://localhost:8081/", "http://127.0.0.1:8081/"),
        ("Localhost.:8081", "http://127.0.0.1:8081/"),
        ("http://triton.example.:8000/", "http://triton.example:8000/"),
        ("http://[0::1]:8081", "http://[::1]:8081/"),  # brackets kept
        ("http://[2001:DB8::7]:8000/", "http://[2001:db8::7]:8000/"),
    ],
)
def test_numeric_aliases_are_written_as_the_address_they_stand_for(given, normalised):
    assert normalise_url(given) == normalised


@pytest.mark.parametrize("url", ["http://u:p@127.0.0.1:8081/", "http://token@127.0.0.1:8081/", "u:p@127.0.0.1:8081"])
def test_credentials_are_refused_and_not_echoed(url):
    with pytest.raises(RefusedUrl, match="credentials in URLs are not accepted") as refused:
        normalise_url(url)
    assert "u:p" not in str(refused.value) and "token" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8081/?token=SECRET", "127.0.0.1:8081/#SECRET", "http://127.0.0.1:8081/?", "http://h/#"]
)
def test_a_query_or_fragment_is_refused_and_not_echoed(url):
    with pytest.raises(RefusedUrl, match=r"query .* or fragment .* is not accepted") as refused:
        normalise_url(url)
    assert "SECRET" not in str(refused.value)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "gopher://127.0.0.1:70/"])
def test_only_http_and_https(url):
    with pytest.raises(RefusedUrl, match="http"):
        normalise_url(url)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "metadata"),  # AWS's IPv6 metadata service: a unique local address
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::a9fe:a9fe", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_denied_addresses(address, why):
    assert why in why_denied(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "172.18.0.5", "192.168.1.9", "fd12::5", "8.8.8.8"])
def test_loopback_private_and_public_addresses_are_allowed_by_default(address):
    assert why_denied(ipaddress.ip_address(address)) is None


def addresses(policy: UrlPolicy, url: str) -> list:
    return asyncio.run(policy.addresses(url, 2.0))


def test_the_allow_list_admits_its_names_and_networks_only():
    policy = UrlPolicy("detection, 10.0.0.0/8, 192.0.2.7")
    assert addresses(policy, "http://10.3.4.5:8081/") == [ipaddress.ip_address("10.3.4.5")]
    assert addresses(policy, "http://192.0.2.7/")
    assert addresses(policy, "http://[::ffff:10.0.0.1]/")  # the IPv4 address it stands for is in 10/8
    for refused in ("http://127.0.0.1:8081/", "http://192.0.2.8/", "http://localhost:8081/"):
        with pytest.raises(RefusedUrl, match="ANONYMIZER_API_REGISTRY_ALLOW"):
            addresses(policy, refused)


def test_the_deny_list_applies_within_the_allow_list_too():
    with pytest.raises(RefusedUrl, match="link-local"):
        addresses(UrlPolicy("169.254.0.0/16"), "http://169.254.169.254/")


def test_names_are_checked_by_every_address_they_resolve_to():
    with pytest.raises(RefusedUrl, match=r"localhost is not among .* ANONYMIZER_API_REGISTRY_ALLOW"):
        addresses(UrlPolicy("10.0.0.0/8"), "http://localhost:8081/")
    assert all(a.is_loopback for a in addresses(UrlPolicy(), "http://localhost:8081/"))


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not a host", "a/b", "http://x/"])
def test_an_allow_list_entry_that_is_nothing_fails_loudly(bad):
    with pytest.raises(ValueError, match="ANONYMIZER_API_REGISTRY_ALLOW"):
        AllowList.parse(bad)
