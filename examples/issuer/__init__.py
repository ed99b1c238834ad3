"""A runnable example token issuer built on ttlpolicy's issuer SDK (see README.md)."""
