"""Booting the appliance: nnos's own PID 1 (init), the data partition, the network, and the
boot timeline printed on the console."""
