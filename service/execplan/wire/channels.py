"""Channels the server opens to other servers: the remote planner of `execplan
executor`, and the replicas control calls are forwarded to.

    channel = peer_channel("planner:7071", credentials)   # None: plaintext

gRPC's default reconnect backoff (1 s growing by 1.6x to 120 s) would leave such a
channel failing every call at once for up to two minutes after its peer restarted;
these options make it retry every 0.1 s growing to 1 s, with a 5 s connect timeout,
as the SDKs' channels do (docs/contract.md, "Client retries").
"""

from __future__ import annotations

import grpc

RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # The shortest time a connection attempt may take before it is given up.
    ("grpc.min_reconnect_backoff_ms", 5_000),
)


def peer_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=RECONNECT_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=RECONNECT_OPTIONS)
