"""The legacy VM's host side: the broker that answers its one channel (messages.py: the
allow-list and schemas; broker.py: limits, audit, quarantine, the socket loop)."""
