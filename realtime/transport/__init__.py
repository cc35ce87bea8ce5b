"""Sockets: the handshake adapter, the reader, the writer (Connection), the epoll poller."""
