"""Slow and greedy clients at the HTTP layer: a uvicorn protocol with deadlines and a cap of
connections per client address.

uvicorn by itself waits for ever for a request's headers and for its body, and counts every open
connection against `limit_concurrency` (beyond which every request is answered 503). So a few
thousand sockets that send half a request line each, from one machine, took the service from
everyone (slowloris). This protocol closes a connection

- whose request headers are not complete `header_seconds` after the connection was made or the
  previous response was sent (an idle keep-alive connection is closed sooner, by uvicorn's own
  keep-alive timeout; this one also catches a client that sends a byte at a time);
- whose request body is not complete `body_seconds` after its headers were;
- beyond `per_address` connections open at once from one client address (an IPv6 client: from
  one /64, which one machine usually holds whole), closed as soon as it is made.

Behind a reverse proxy every connection comes from the proxy's address, so the cap applies to
the proxy as a whole: the proxy must then enforce its own (nginx: client_header_timeout,
client_body_timeout, limit_conn).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("autograder.service")

TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                  b"content-length: 45\r\nconnection: close\r\n\r\n"
                  b"the request was not sent in time: send it again")


def address_key(client: tuple[str, int] | None) -> str:
    """The address whose connections are counted together: an IPv6 address's /64."""
    if client is None:
        return ""
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a Unix socket's peer, or the like
        return str(client[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class LimitedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the deadlines and the cap above (set by `limited_protocol`)."""

    header_seconds: float = 10.0
    body_seconds: float = 60.0
    per_address: int = 64
    # Trusted reverse proxies (c.Service.trusted_proxies): every student's connection comes
    # from their address, so they are not capped here; the proxy limits its own clients.
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._key: str | None = None  # counted under this address, once made

    def _counts(self) -> dict[str, int]:
        # Per server (a test may run several in one process), on uvicorn's shared state.
        counts = getattr(self.server_state, "autograder_per_address", None)
        if counts is None:
            counts = {}
            self.server_state.autograder_per_address = counts  # type: ignore[attr-defined]
        return counts

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started \
                or (what == "headers" and cycle.response_complete):
            # No answer under way: say why before closing.
            self.transport.write(TIMEOUT_ANSWER)
        log.info("closed a connection whose request %s was not complete in time", what)
        self.transport.close()

    # --- uvicorn's protocol interface -----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        key = address_key(self.client)
        counts = self._counts()
        if self._exempt():
            self._arm(self.header_seconds, "headers")
            return
        if counts.get(key, 0) >= self.per_address:
            log.warning("refused a connection: %d already open from that address",
                        self.per_address)
            transport.close()  # connection_lost follows; nothing was counted
            return
        counts[key] = counts.get(key, 0) + 1
        self._key = key
        self._arm(self.header_seconds, "headers")

    def _exempt(self) -> bool:
        if not self.exempt or self.client is None:
            return False
        try:
            address = ipaddress.ip_address(self.client[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.exempt)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._key is not None:
            counts = self._counts()
            left = counts.get(self._key, 1) - 1
            if left > 0:
                counts[self._key] = left
            else:
                counts.pop(self._key, None)
            self._key = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.transport is not None and not self.transport.is_closing():
            self._arm(self.body_seconds, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._arm(self.header_seconds, "headers")  # answered early: the next request's
        else:
            self._disarm()  # the app's time to answer is not the client's to keep short

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport is None or self.transport.is_closing() or self._deadline is not None:
            return  # a body still coming in, answered early, keeps its own deadline
        if self.cycle is not None and self.cycle.response_complete:  # none pipelined
            self._arm(self.header_seconds, "headers")  # the next request's, from now


def limited_protocol(header_seconds: float, body_seconds: float, per_address: int,
                     exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
                     ) -> type[LimitedHttpProtocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) with these limits;
    connections from `exempt` networks (trusted proxies) are not capped per address."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,),
                {"header_seconds": header_seconds, "body_seconds": body_seconds,
                 "per_address": per_address, "exempt": tuple(exempt)})
