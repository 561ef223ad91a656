"""Pure domain: canonical types, routing policies, slots and the wait queue.

Nothing here does I/O or reads a clock; time is passed in, so the same code runs in
the live gateway and in a virtual-time fleet simulation.
"""
