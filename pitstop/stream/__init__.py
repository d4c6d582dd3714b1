"""Streaming inference: messages from a broker scored by the Engine, answers back to it."""
