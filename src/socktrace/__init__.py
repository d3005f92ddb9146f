"""socktrace: trace TCP connections and show which IPv4 ones go through
AF_INET6 (dual-stack) sockets."""

__version__ = "0.1.0"
