"""Outbound HTTP: what the server fetches or calls on others' behalf (``guard``)."""
