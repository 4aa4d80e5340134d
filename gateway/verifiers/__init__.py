"""Verifiers for security teams: each module needs only Python and ``cryptography``.

A module here imports nothing else from callveil, so it can be copied off the box and run
alone (``python3 attestation.py --help``); the box's own commands call the same code.
"""
