"""Where Slipway may connect when a function's settings name the host: the GitLab API,
the notification webhook, the git repository.

Those URLs come from function owners, and the requests go out from inside the
platform's network: without a check, an owner could make Slipway call a metadata
service, an admin port on loopback or an internal API (server-side request forgery).
So a name is resolved once, here, every address is checked against the allowed
networks (SLIPWAY_OUTBOUND_ALLOWED_NETWORKS, passed in by the caller), and the
caller connects to the address that was checked, never to the name again: a
second lookup could answer differently (DNS rebinding).

The setting is a list of networks (CIDRs) and the word `public` (every globally
routable address). Link-local addresses (where cloud metadata services live) are
refused whatever it lists. No Django here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from deploy.errors import UserError

SETTING = "SLIPWAY_OUTBOUND_ALLOWED_NETWORKS"
PUBLIC = "public"
REFUSED_CODE = "outbound-address-refused"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused even under 0.0.0.0/0: link-local (169.254.169.254 is the metadata service of
# AWS, GCP and Azure; ECS task metadata at 169.254.170.2) and AWS's IPv6 metadata address.
ALWAYS_REFUSED: tuple[Network, ...] = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                                       ipaddress.ip_network("fd00:ec2::254/128"))
# IPv6 forms that carry an IPv4 address a gateway may reach for us: NAT64, 6to4.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Allowed:
    """The networks outgoing requests may reach (`public`: any globally routable address)."""

    public: bool
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Allowed:
        """`["public", "10.20.0.0/16"]`; raises ValueError naming a bad item."""
        public, networks = False, []
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item.lower() == PUBLIC:
                public = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is neither a network (e.g. 10.0.0.0/8) nor {PUBLIC!r}") from None
        return cls(public, tuple(networks))

    def __str__(self) -> str:
        return ",".join(([PUBLIC] if self.public else []) + [str(n) for n in self.networks]) or "(nothing)"

    def permits(self, address: Address) -> bool:
        if always_refused(address):
            return False
        if any(address in network for network in self.networks):
            return True
        return self.public and is_public(address)


PUBLIC_ONLY = Allowed(public=True)


def _embedded(address: Address) -> list[Address]:
    """The address and any IPv4 address it carries (mapped, NAT64, 6to4)."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def always_refused(address: Address) -> bool:
    return any(a.is_link_local or any(a in network for network in ALWAYS_REFUSED) for a in _embedded(address))


def is_public(address: Address) -> bool:
    """Globally routable: not private, loopback, shared (CGNAT), reserved, multicast or unspecified."""
    return all(a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified) for a in _embedded(address))


def resolve(host: str, port: int) -> list[str]:
    """The one seam to DNS: the addresses `host` resolves to, in the resolver's order.
    Raises OSError (socket.gaierror) when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def literal(host: str) -> Address | None:
    """The address a host written as an IP address is (brackets allowed); None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def checked(host: str, port: int, allowed: Allowed, *, what: str) -> str:
    """The address to connect to for `host`: resolved once, the first one `allowed`
    permits. Raises UserError(outbound-address-refused) naming the setting when none is
    (OSError when the name does not resolve)."""
    given = literal(host)
    found = [given] if given is not None else [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
    for address in found:
        if allowed.permits(address):
            return str(address)
    shown = ", ".join(str(a) for a in found[:4]) or "no address"
    named = f"{host} ({shown})" if given is None else shown
    if found and all(always_refused(a) for a in found):
        raise UserError(REFUSED_CODE, f"{what} {named} is a link-local or metadata address: refused whatever "
                        f"{SETTING} lists")
    raise UserError(REFUSED_CODE, f"{what} {named} is outside {SETTING} ({allowed}); an internal host must be "
                    "listed there by the operator")
