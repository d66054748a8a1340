"""No network in tests: socket.connect to anything but loopback or a Unix socket raises
NetworkBlocked, except in tests marked `download` (deselected unless `-m download`).

Installed for tests/ and benchmarks/ alike by the repo's root conftest.py. Covers the pytest process
only; the subprocesses tests start (workers, Chromium, Ray nodes) are not patched.
"""
import errno
import ipaddress
import socket

import pytest


class NetworkBlocked(OSError):
    """A test tried to reach another machine. An OSError, as the network being down is: code that
    probes the network (Ray finding its node address with a UDP connect) falls back to loopback."""


def _is_local(sock, address):
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already be a network call


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """The guard, for every test but those marked `download`."""
    if request.node.get_closest_marker("download"):
        yield
        return
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if not _is_local(sock, address):
            raise NetworkBlocked(errno.ENETUNREACH, "test %s tried to connect to %r; tests make no "
                                 "network calls (mark it @pytest.mark.download)"
                                 % (request.node.nodeid, address))

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield


def deselect_downloads(config, items):
    """Tests marked `download` run only when asked for (-m download)."""
    if "download" in (config.getoption("-m") or ""):
        return
    keep = [item for item in items if not item.get_closest_marker("download")]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
