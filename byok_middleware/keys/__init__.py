"""Tenant provider keys: the management API and the service behind it."""
