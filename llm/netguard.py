"""Where tenant-configured model servers may be reached: public addresses only, unless the operator allows more.

A tenant's provider URL is user input that ragdesk connects to from inside its own network, so it must not
become a way in (server-side request forgery): no loopback, private (RFC 1918, CGNAT 100.64/10, IPv6 ULA),
link-local (169.254/16 with the cloud metadata address, fe80::/10), unspecified, multicast or reserved address,
in whatever spelling (IPv4-mapped / NAT64 / 6to4 IPv6, decimal, octal or hex IPv4).

Two checks:
  * `check_url` when a provider is saved, for a clear refusal (literal addresses, localhost names, and what the
    name resolves to now);
  * GuardedAsyncTransport / GuardedSyncTransport at every connection: the name is resolved here, every address is
    checked, and the socket is opened to that checked address (TLS and the Host header keep the name), so a
    name that resolves elsewhere later (DNS rebinding) or a redirect gets no further. Proxies from the
    environment are not used for these clients (a proxy would resolve the name itself).

The operator opens networks with LLM_ALLOWED_PRIVATE_NETWORKS (CIDRs, e.g. "10.0.0.0/8,127.0.0.1/32"). Pools the
operator configures (settings, the admin) never go through this module.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
import ssl
import typing
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SETTING = "LLM_ALLOWED_PRIVATE_NETWORKS"
NOT_ALLOWED = f"this address is not allowed; ask your operator to allow it with {SETTING}"
RESOLVE_TIMEOUT_S = 3.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
# What inet_aton reads as an IPv4 address although ipaddress does not: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_LOOSE_IPV4 = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)


class AddressNotAllowed(httpcore.ConnectError):
    """A tenant-configured URL points to an address the operator has not allowed. A ConnectError for httpx, so
    every caller that handles "could not connect" handles it; `is_not_allowed` tells the two apart."""

    def __init__(self, message: str = NOT_ALLOWED):
        super().__init__(message)


def is_not_allowed(exc: BaseException | None) -> bool:
    """True when `exc` or anything it was raised from is an AddressNotAllowed."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, AddressNotAllowed):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


# --- addresses ------------------------------------------------------------------------------------------------

def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in settings.LLM_ALLOWED_PRIVATE_NETWORKS or []:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{SETTING}: {entry!r} is not a network such as 10.0.0.0/8") from exc
    return networks


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to `ip` really reaches, for the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("loopback", "private"...), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return blocked_reason(inner)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (carrier-grade NAT)"
    if ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def _in_allowed(ip: IPAddress, networks) -> bool:
    forms = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            forms.append(ip := ipaddress.IPv6Address(str(ip).split("%", 1)[0]))
        if (inner := _embedded_ipv4(ip)) is not None:
            forms.append(inner)
    return any(form.version == net.version and form in net for form in forms for net in networks)


def address_problem(ip: IPAddress) -> str | None:
    """The reason `ip` may not be reached by tenant-configured clients (None: it may)."""
    reason = blocked_reason(ip)
    if reason is None or _in_allowed(ip, allowed_networks()):
        return None
    return reason


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is one in any spelling a resolver accepts, else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LOOSE_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (tests replace this to play a rebinding DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for host:port; AddressNotAllowed when any of them may not be reached
    (all, not just one: a name that mixes public and private addresses is refused as a whole)."""
    literal = literal_address(host)
    name = host.lower().rstrip(".")
    if literal is not None:
        addresses = [str(literal)]
    elif name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        addresses = ["127.0.0.1"]
    else:
        addresses = resolve_host(host, port)
    for address in addresses:
        if address_problem(ipaddress.ip_address(address)):
            raise AddressNotAllowed()
    return addresses


# --- save time ------------------------------------------------------------------------------------------------

_resolver_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="netguard-resolve")


def check_url(url: str) -> None:
    """Raise ValueError with a message for the tenant when `url` points to an address they may not use.

    A name that cannot be resolved now passes (it may resolve later): the connect-time check still applies.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None  # e.g. 0177.0.0.1, which httpx refuses but a resolver would read as 127.0.0.1
    try:
        hosts = {urlsplit(url).hostname or "", parsed.host if parsed is not None else ""} - {""}
    except ValueError:
        hosts = set()
    for host in sorted(hosts):
        literal = literal_address(host)
        reason = address_problem(literal) if literal is not None else None
        if reason:
            raise ValueError(f"{host} is not a public address ({reason}): {NOT_ALLOWED}.")
    if parsed is None:
        raise ValueError("Enter a valid http:// or https:// URL.")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("Use an http:// or https:// URL.")
    host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
    if literal_address(host) is not None:
        return
    name = host.lower().rstrip(".")
    future = _resolver_pool.submit(checked_addresses, host, port)
    try:
        future.result(timeout=RESOLVE_TIMEOUT_S)
    except AddressNotAllowed:
        where = "a loopback address" if name in _LOOPBACK_NAMES or name.endswith(".localhost") else \
            "an address that is not public"
        raise ValueError(f"{host} points to {where}: {NOT_ALLOWED}.") from None
    except (OSError, UnicodeError, ValueError, concurrent.futures.TimeoutError):
        return  # unresolvable now; connections are checked again


# --- connect time ---------------------------------------------------------------------------------------------

class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the name itself, then connects to the checked address only."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await anyio.to_thread.run_sync(checked_addresses, host, port, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        future = _resolver_pool.submit(checked_addresses, host, port)
        try:
            addresses = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable | None = None) -> httpcore.NetworkStream:
        raise AddressNotAllowed()

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits = httpx.Limits()):
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx has no parameter for the network backend: the same pool it builds, with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedAsyncBackend(),
        )


class GuardedSyncTransport(httpx.HTTPTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits = httpx.Limits()):
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedSyncBackend(),
        )
