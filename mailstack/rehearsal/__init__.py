"""``mailstack rehearse``: the whole migration on one machine, with real servers on loopback."""
