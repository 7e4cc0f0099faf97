"""Simulated robots that play the microcontroller: they speak nnos serial protocol v1 on a
pseudo-terminal, so the host side does real serial I/O through pyserial."""
