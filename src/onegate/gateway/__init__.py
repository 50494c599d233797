"""The data plane: routing, upstreams and the proxy, composed into one ASGI app."""
