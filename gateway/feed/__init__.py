"""The central side: ``callveil feed`` collects, verifies and merges the boxes' aggregates.

It needs neither the box's capture nor its keys: only the shared protocol (topics, payload
format), the merge of buckets, a TLS client certificate and the registered boxes' public keys.
"""
