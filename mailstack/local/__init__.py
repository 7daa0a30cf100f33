"""Real mail servers on loopback addresses, for the integration tests and the rehearsal."""
