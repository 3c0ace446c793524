"""Channel construction shared by the typed client and the worker SDK."""

from __future__ import annotations

import os

import grpc

DEFAULT_ADDRESS = "127.0.0.1:7070"
ADDRESS_ENV = "EXECPLAN_ADDRESS"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Keepalive pings detect a dead peer on long-lived streams (worker Connect, watch)
# that may stay silent for minutes; the server allows pings this often
# (grpc.http2.min_ping_interval_without_data_ms), otherwise it answers GOAWAY.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Plans of 50k tasks and batched stream messages exceed the 4 MiB default.
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
)


def resolve_address(address: str | None) -> str:
    """The explicit address, else $EXECPLAN_ADDRESS, else 127.0.0.1:7070."""
    return address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def insecure_channel(address: str | None) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(resolve_address(address), options=CHANNEL_OPTIONS)
