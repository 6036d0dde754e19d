"""Who is asking: the client's IP address, believing X-Forwarded-For only from our proxies.

X-Forwarded-For is whatever the client wrote, plus what each proxy appended. Only the
entries added by proxies we run (settings.trusted_proxies) can be believed, so the list is
read from the right, past our own proxies, and the first address that is not one of them is
the client. A peer that is not an IP address (a Unix socket, Starlette's TestClient's
"testclient") is never a trusted proxy and never inside a network.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import Scope

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def parse_networks(spec: str) -> tuple[Network, ...]:
    """Return the networks of a comma-separated list of addresses or CIDRs ("" = none);
    raise ValueError naming a bad entry."""
    out: list[Network] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ip_network(part, strict=False))
        except ValueError as e:
            raise ValueError(f"not an address or CIDR: {part!r}") from e
    return tuple(out)


def parse_address(text: str) -> Address | None:
    """Return the IP address in text (IPv4-mapped IPv6 as IPv4), or None if it is none."""
    try:
        addr = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def in_networks(addr: Address | None, networks: tuple[Network, ...]) -> bool:
    """Return True when addr is inside one of networks (never for None)."""
    return addr is not None and any(addr in net for net in networks)


def client_address(scope: Scope, trusted_proxies: tuple[Network, ...]) -> Address | None:
    """Return the client's address: the direct peer, or — when the peer is a trusted proxy —
    the rightmost X-Forwarded-For entry that is not one; None when it is not an IP."""
    client = scope.get("client")
    peer = parse_address(str(client[0])) if client else None
    if not in_networks(peer, trusted_proxies):
        return peer
    hops: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            hops.extend(value.decode("latin-1").split(","))
    origin: Address | None = peer
    for hop in reversed(hops):
        origin = parse_address(hop)
        if origin is None:
            return None  # a garbled entry: whoever is behind it is unknown
        if not in_networks(origin, trusted_proxies):
            return origin
    return origin  # every hop is one of ours: the request started at the leftmost
