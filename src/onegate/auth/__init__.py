"""Authentication at the edge: JWT issuers, API keys, and the identity forwarded upstream."""
