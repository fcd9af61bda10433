"""Energy analytics: exact energy from power samples and counters, local buckets, tariffs.

Pure functions over numpy arrays. Timestamps are int64 epoch milliseconds UTC, power is float64
watts (negative means export) and energy is in watt-hours. Local time (days, hours, tariff
zones) exists only at the edges: :mod:`wattlake.energy.buckets` turns a calendar into UTC
millisecond edges, and every other function works on those edges.
"""
