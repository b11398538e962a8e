"""Postgres: the source of truth for the catalogue and every sale (never imports engine)."""
