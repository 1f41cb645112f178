"""Which inference-server URLs the registry accepts, and the checked addresses discovery connects to.

/set_url makes the API send requests to whatever address it is given, so without a policy it
reaches anything the API can reach (server-side request forgery). The policy:

* http and https only, and no credentials, query or fragment in the URL: the registry is a plain
  file that /list_urls shows, so it never holds secrets (and a refused URL is never echoed);
* one canonical form per server, so a second spelling never becomes a second replica: numeric
  aliases, IPv4-mapped IPv6 addresses (`[::ffff:127.0.0.1]`) and `localhost` are written as the
  IPv4 address they stand for, IPv6 literals in their compressed form inside brackets;
* numeric aliases of IPv4 addresses (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`), which the
  resolver accepts as addresses, are written in dotted form before anything is checked, so an
  alias is checked (and listed) as the address it stands for;
* no address a host resolves to may be link-local (cloud metadata services answer at
  169.254.169.254 and fd00:ec2::254), multicast, unspecified, broadcast or reserved; IPv6 forms of
  IPv4 addresses (mapped, NAT64, 6to4) are unwrapped first. Loopback and private addresses are
  allowed: the bundled stack and Docker compose run there;
* where ANONYMIZER_API_REGISTRY_ALLOW is set, the host must be one of its names, or every address
  it resolves to must lie in one of its networks.

A host is resolved once per discovery and discovery connects to the addresses checked here (see
`discovery.Session`), so a name that resolves elsewhere the second time (DNS rebinding) gains nothing.
"""

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit, urlunsplit

import httpx

from anonymization_api.errors import InvalidRequest, RefusedUrl

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

ALLOW_SETTING = "ANONYMIZER_API_REGISTRY_ALLOW"
# Cloud metadata addresses outside the link-local ranges: AWS over IPv6, Alibaba Cloud.
METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.y.z to this host
BROADCAST = IPv4Address("255.255.255.255")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_ALIAS = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)  # what inet_aton might read as an address
HOST_NAME = re.compile(r"[a-z0-9_.-]+")


class Unresolvable(Exception):
    """The host's name does not resolve (in time); reported as "not reachable" like a closed port."""


def canonical_host(host: str) -> str:
    """An IP literal in its standard form, numeric IPv4 aliases and IPv4-mapped IPv6 addresses as
    the IPv4 address they stand for, `localhost` as 127.0.0.1; another name as it is, without a
    trailing dot."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        # The name every resolver keeps for this host (RFC 6761): as a second replica beside
        # 127.0.0.1 it would get its share of the calls for the same server.
        return "127.0.0.1"
    if IPV4_ALIAS.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))  # the resolver's reading of 2130706433, 0x7f.1
        except OSError:
            pass  # a name made of hex digits ("face", "cafe.beef")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)  # the same socket as the IPv4 address on a dual-stack host
    return address.compressed


def normalise_url(raw: str) -> str:
    """`host:port`, `http://host:port` or `http://host:port/` -> `http://host:port/`, with the
    host in canonical form; 400 for what the policy refuses before any address is looked at."""
    text = raw.strip()
    if not text:
        raise InvalidRequest("the url is empty; send the inference server's address, e.g. http://127.0.0.1:8081/")
    example = "e.g. http://127.0.0.1:8081/"
    if "?" in text or "#" in text:  # never echoed: a query or fragment may hold a token
        raise RefusedUrl(
            "a query (?...) or fragment (#...) in the url is not accepted: the registry never stores secrets and "
            f"an inference server needs neither; register its address only, {example}"
        )
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"'{raw}' is not a valid url ({exc}); {example}") from exc
    if "@" in parts.netloc:  # never echoed: it holds the credentials
        raise RefusedUrl(
            "credentials in URLs are not accepted; the registry never stores secrets: register the server "
            "without them and restrict who reaches it another way (a network policy, a proxy in front of it)"
        )
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RefusedUrl(f"'{raw}' is not an http(s) url with a host; {example}")
    host = canonical_host(parts.hostname)
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    try:
        url = httpx.URL(urlunsplit(parts._replace(netloc=netloc)))
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"'{raw}' is not a valid url ({exc}); {example}") from exc
    # httpx drops a port that is the scheme's default; BMW's file keeps `:80` as written, so do we
    rest = str(url)[len(f"{url.scheme}://{url.netloc.decode('ascii')}") :]
    return f"{url.scheme}://{netloc}{rest}".rstrip("/") + "/"


def as_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64, 6to4); else the address itself."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour:
            return address.sixtofour
    return address


def why_denied(address: Address) -> str | None:
    """What makes `address` no place for an inference server; None where it may be one."""
    address = as_ipv4(address)
    if address.is_link_local or address in METADATA:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified or address in THIS_NETWORK:
        return "an unspecified address"
    if address == BROADCAST:
        return "the broadcast address"
    if address.is_reserved and not address.is_loopback:  # ::1 lies in the reserved ::/8
        return "a reserved address"
    return None


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> "AllowList | None":
        """`host, 10.0.0.0/8, fd00::/8, 192.0.2.7` -> the allow list; None where `text` is empty.
        Raises ValueError naming an entry that is neither a host name nor an address or network."""
        names, networks = set(), []
        for entry in (part.strip().lower() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry if "/" in entry else canonical_host(entry), strict=False))
            except ValueError as exc:
                if "/" in entry or not HOST_NAME.fullmatch(entry):
                    raise ValueError(
                        f"{ALLOW_SETTING}: '{entry}' is neither a host name nor an address or network"
                    ) from exc
                names.add(entry)
        return cls(frozenset(names), tuple(networks)) if names or networks else None

    def admits(self, host: str, addresses: list[Address]) -> bool:
        if host in self.names:
            return True
        return all(any(a in net or as_ipv4(a) in net for net in self.networks) for a in addresses)


class UrlPolicy:
    def __init__(self, allow: str = "") -> None:
        self._allow = AllowList.parse(allow)

    async def addresses(self, url: str, timeout_s: float) -> list[Address]:
        """The addresses of `url`'s host, each one checked, in the resolver's order. Raises RefusedUrl
        where the policy refuses one, Unresolvable where the name does not resolve within `timeout_s`."""
        parsed = httpx.URL(url)
        host = parsed.host
        try:
            addresses = [ipaddress.ip_address(host)]
            named = ""
        except ValueError:
            addresses = await _resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80), timeout_s)
            named = f"{host} resolves to "
        for address in addresses:
            if why := why_denied(address):
                raise RefusedUrl(f"is refused: {named or f'{address} is '}{why}; the registry does not register it")
        if self._allow and not self._allow.admits(host, addresses):
            raise RefusedUrl(f"is refused: {host} is not among the hosts and networks that {ALLOW_SETTING} allows")
        return addresses


async def _resolve(host: str, port: int, timeout_s: float) -> list[Address]:
    try:
        # getaddrinfo blocks; in a thread, bounded, so a slow resolver holds neither the loop nor the caller.
        found = await asyncio.wait_for(
            asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM), timeout_s
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise Unresolvable(host) from exc
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])  # without an IPv6 zone
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(host)
    return addresses
