"""A small TCP proxy whose connections a test can cut or freeze, to simulate a network failure."""

from __future__ import annotations

import contextlib
import socket
import threading

from outboxkit.testing.servers import free_port


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``cut()`` drops every live connection (as a
    broken network would); ``block()`` also refuses new ones until ``unblock()``; ``inject(data)``
    sends bytes to every connected client as if the server had sent them (an ``-ERR`` line, a
    protocol frame), between two of the server's own writes."""

    def __init__(
        self, target_host: str, target_port: int, port: int | None = None, *, unix_socket: str | None = None
    ) -> None:
        self.target = (target_host, target_port)
        # A private database listening on a Unix socket only: forward TCP to it.
        self.unix_socket = unix_socket
        self.port = port or free_port()
        self._server: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._clients: set[socket.socket] = set()  # the accepted sides, towards the clients
        # One lock per socket we write to, so that injected bytes never land inside a forwarded chunk.
        self._send_locks: dict[socket.socket, threading.Lock] = {}
        self._lock = threading.Lock()
        self._blocked = False
        self._flowing = threading.Event()  # cleared by freeze(): bytes are held, nothing is closed
        self._flowing.set()
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._server = srv
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._blocked:
                client.close()
                continue
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self._clients.add(client)
                for s in (client, upstream):
                    self._send_locks[s] = threading.Lock()
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if self.unix_socket is None:
            upstream = socket.create_connection(self.target, timeout=5)
        else:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            try:
                upstream.connect(self.unix_socket)
            except OSError:
                upstream.close()
                raise
        upstream.settimeout(None)  # the timeout was for the connect; the pipes block
        return upstream

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        lock = self._send_locks[dst]
        try:
            while chunk := src.recv(65536):
                self._flowing.wait()
                with lock:
                    dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._conns.discard(s)
            self._clients.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> int:
        """Drop every live connection; returns how many sockets were cut."""
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._drop(s)
        return len(conns)

    def inject(self, data: bytes) -> int:
        """Send ``data`` to every connected client, as if from the server; returns how many got it."""
        with self._lock:
            clients = [(c, self._send_locks[c]) for c in self._clients]
        sent = 0
        for client, lock in clients:
            with lock, contextlib.suppress(OSError):
                client.sendall(data)
                sent += 1
        return sent

    def block(self) -> None:
        self._blocked = True
        self.cut()

    def unblock(self) -> None:
        self._blocked = False

    def freeze(self) -> None:
        """Stop forwarding without closing anything, as a partition or a hung peer looks from each
        side: connections stay open, requests get no answer. ``thaw()`` delivers what was held."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
