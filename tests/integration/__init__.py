"""Tests against the real broker and Redis (started by the session fixtures)."""
