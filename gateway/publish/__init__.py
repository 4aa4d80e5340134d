"""Publishing aggregates over MQTT: signed payloads, an on-disk outbox, birth and last will.

``topics``, ``message`` and ``tls`` are the protocol both ends share; the central feed imports
them without the box-side parts.
"""
