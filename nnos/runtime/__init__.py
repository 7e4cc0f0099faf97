"""The loop process: the device's main loop (sensors → plan → actuators at a fixed rate), its
safety rules, model slots with admission control, hitless swaps, probation and shadow runs."""
