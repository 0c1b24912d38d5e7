"""ICE servers (STUN and TURN): how viewers behind NAT or strict firewalls reach the server.

One list serves both ends: the server's peer connections use it (aiortc), and the page gets it in
``hello`` for its own. ``ice_transport_policy: relay`` makes both use TURN relays only. From YAML
(``server.ice_servers``: RTCIceServer objects, ``{urls, username, credential}``) or the command
line (``--ice-server turn:USER:PASS@HOST:PORT?transport=udp``, credentials URL-encoded). TURN
credentials go to the page (it needs them) and nowhere else: ``describe`` is what logs show.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer

logger = logging.getLogger(__name__)

POLICIES = ("all", "relay")
URI = re.compile(r"(stun|stuns|turn|turns):([^?@/]+)(\?transport=(udp|tcp))?")
MAX_SERVERS = 8


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def for_page(self) -> dict[str, Any]:
        """As the browser's RTCIceServer."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry.update(username=self.username, credential=self.credential)
        return entry

    def describe(self) -> str:
        """For logs: the URLs and the user, never the credential."""
        return ", ".join(self.urls) + (f" (user {self.username})" if self.username else "")


@dataclass(frozen=True)
class IceConfig:
    servers: tuple[IceServer, ...] = ()
    policy: str = "all"

    def for_page(self) -> dict[str, Any]:
        return {"ice_servers": [s.for_page() for s in self.servers], "ice_transport_policy": self.policy}

    def rtc_configuration(self) -> RTCConfiguration:
        """The server's own peer connections' configuration."""
        servers = [RTCIceServer(list(s.urls), s.username, s.credential) for s in self.servers]
        if self.policy == "all":
            return RTCConfiguration(iceServers=servers)
        try:  # aiortc 1.16 and newer (Python 3.11+)
            from aiortc import RTCIceTransportPolicy  # type: ignore[attr-defined]
        except ImportError:
            return RTCConfiguration(iceServers=servers)
        relay = RTCIceTransportPolicy.RELAY
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=relay)  # type: ignore[call-arg]

    def describe(self) -> str:
        servers = "; ".join(s.describe() for s in self.servers) or "none (host candidates only)"
        return f"{servers}, policy {self.policy}"


def ice_config(servers: list[Any], policy: str = "all") -> IceConfig:
    """Check YAML-style ICE servers and the policy; a ValueError names the entry (never its
    credential)."""
    if policy not in POLICIES:
        raise ValueError(f"ice_transport_policy must be all or relay, got {policy!r}")
    if not isinstance(servers, list) or len(servers) > MAX_SERVERS:
        raise ValueError(f"ice_servers must be a list of at most {MAX_SERVERS} {{urls, username, credential}}")
    parsed = tuple(_server(entry, i) for i, entry in enumerate(servers))
    if policy == "relay" and not any(url.startswith("turn") for s in parsed for url in s.urls):
        raise ValueError("ice_transport_policy relay needs a TURN server in ice_servers")
    if policy == "relay":
        try:
            from aiortc import RTCIceTransportPolicy  # type: ignore[attr-defined]  # noqa: F401
        except ImportError:
            logger.warning("this aiortc cannot restrict the server's own candidates to relays (1.16+ can); "
                           "viewers still use relays only")  # fmt: skip
    return IceConfig(parsed, policy)


def _server(entry: Any, index: int) -> IceServer:
    where = f"ice_servers[{index}]"
    if not isinstance(entry, dict) or "urls" not in entry or set(entry) - {"urls", "username", "credential"}:
        raise ValueError(f"{where} must be {{urls, username, credential}} (username and credential for TURN)")
    urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
    for url in urls:
        if not isinstance(url, str) or not URI.fullmatch(url):
            shown = url if isinstance(url, str) and "@" not in url else "(not shown)"
            kinds = "a stun:, stuns:, turn: or turns: URI (HOST[:PORT][?transport=udp|tcp])"
            raise ValueError(f"{where}: {shown} is not {kinds}")
    username, credential = entry.get("username"), entry.get("credential")
    if any(u.startswith("turn") for u in urls) and not (isinstance(username, str) and isinstance(credential, str)):
        raise ValueError(f"{where}: a TURN server needs a username and a credential")
    return IceServer(tuple(urls), username, credential)


def parse_ice_url(text: str) -> dict[str, Any]:
    """``--ice-server``: ``stun:HOST[:PORT]`` or ``turn[s]:USER:PASS@HOST[:PORT][?transport=...]``
    as a YAML-style entry."""
    scheme, _, rest = text.partition(":")
    user, at, address = rest.rpartition("@")
    if not at:
        return {"urls": text}
    username, _, credential = user.partition(":")
    return {
        "urls": f"{scheme}:{address}",
        "username": urllib.parse.unquote(username),
        "credential": urllib.parse.unquote(credential),
    }


__all__ = ["IceConfig", "IceServer", "ice_config", "parse_ice_url"]
