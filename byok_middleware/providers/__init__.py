"""Upstream providers: the spec table and one module per wire format."""
