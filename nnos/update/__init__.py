"""Updates in the field through RAUC: the bus and RAUC's service as supervised processes
(services.py), the client the control plane and the health gate use (rauc.py), the record of the
last update kept in the data partition (record.py) and the health-gated commit after a new slot
boots (health.py)."""
