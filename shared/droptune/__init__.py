"""droptune: drop a JSONL file in a bucket, get a tuned model deployed.

The library every function imports. It is split by domain: settings, the messaging topology,
the event envelope, typed edge models of incoming events, structured logging, cloud clients,
datasets and the model catalog, job records.
"""

__version__ = "0.1.0"
