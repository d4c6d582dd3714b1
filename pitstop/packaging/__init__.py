"""Preparing models before they are pushed: export (sentence-transformers to ONNX), int8
quantisation, and the evaluation that compares an optimised model with its original. Never
imported at serve time. (The name ``jobs`` is left free for what hosts an Engine.)"""
