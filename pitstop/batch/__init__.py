"""Batch scoring: registered versions scoring files offline, resumable (``pitstop batch``)."""
