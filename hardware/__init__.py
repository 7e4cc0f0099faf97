"""nnos hardware layer: transports → protocol → devices, board configs, simulated robots.

Layers: ``transport`` (pyserial) carries bytes; ``protocol`` frames them (nnos serial protocol
v1, see PROTOCOL.md); ``devices`` expose named channels; ``board`` binds channels to a
plan's inputs and outputs. Everything runs on a laptop against ``sim`` robots.
"""
