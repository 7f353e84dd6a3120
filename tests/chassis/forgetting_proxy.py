"""A TCP proxy in front of the broker that can make the broker forget connections without
telling their clients, as a node does that a partition paused and restarted while its
resets could not reach them: such a connection still looks open, the client's next write
is taken and answered with a reset, and what it carried is lost.

It runs in a process of its own. In the test process its sockets would be green ones
that its pumps close under each other's reads; eventlet's hub kept listeners for such
sockets, and later tests whose sockets reused those file numbers failed with "Second
simultaneous read on fileno N". Out here the test process only ever sees a peer that
resets, as it would from a real broker.

Protocol on stdin/stdout, one line each: the proxy prints its port; to "forget P Q ..."
(client ports) it answers "carried P ..." with the ports it carried.
"""

import selectors
import socket
import struct
import subprocess
import sys
from urllib.parse import urlparse


class ForgettingProxy:
    """The test side: starts the proxy process in front of the broker at `amqp_uri`,
    forgets connections, stops it. `uri` is the broker's address through the proxy."""

    def __init__(self, amqp_uri: str):
        broker_port = urlparse(amqp_uri).port or 5672
        self.process = subprocess.Popen([sys.executable, __file__, str(broker_port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.uri = amqp_uri.replace(f":{broker_port}/", f":{self.process.stdout.readline().strip()}/")

    def forget(self, ports: set[int]) -> set[int]:
        """The broker forgets these client connections: their upstream goes, the client
        hears nothing until it writes. Returns the ports this proxy carried."""
        self.process.stdin.write("forget " + " ".join(map(str, sorted(ports))) + "\n")
        self.process.stdin.flush()
        return {int(port) for port in self.process.stdout.readline().split()[1:]}

    def close(self):
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


class _Pipes:
    """The proxy process: one select loop over the listener, the control pipe and every
    carried connection."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.peers: dict[socket.socket, socket.socket] = {}
        self.client_port: dict[socket.socket, int] = {}  # both ends of a pipe -> its client's port
        self.upstreams: dict[int, socket.socket] = {}  # client port -> its broker side
        self.forgotten: set[int] = set()
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.selector.register(sys.stdin, selectors.EVENT_READ, self._command)

    def run(self):
        print(self.listener.getsockname()[1], flush=True)
        while True:
            for key, _ in self.selector.select():
                key.data(key.fileobj)

    def _accept(self, listener):
        client, (_, port) = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.peers[client], self.peers[upstream] = upstream, client
        self.client_port[client] = self.client_port[upstream] = port
        self.upstreams[port] = upstream
        for sock in (client, upstream):
            self.selector.register(sock, selectors.EVENT_READ, self._pump)

    def _pump(self, source):
        port = self.client_port[source]
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if port in self.forgotten:  # only the client is left: its write meets a reset
            source.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._drop(source)
            return
        if data:
            try:
                self.peers[source].sendall(data)
                return
            except OSError:
                pass
        self._drop(source)
        self._drop(self.peers[source])

    def _command(self, stdin):
        line = stdin.readline()
        if not line:  # the test process went away
            sys.exit(0)
        carried = {int(port) for port in line.split()[1:]} & set(self.upstreams)
        for port in carried:
            self.forgotten.add(port)
            self._drop(self.upstreams[port])
        print("carried", *sorted(carried), flush=True)

    def _drop(self, sock):
        if sock.fileno() == -1:
            return
        self.selector.unregister(sock)
        sock.close()


if __name__ == "__main__":
    _Pipes(int(sys.argv[1])).run()
