"""The device simulator: a fleet of simulated meters that publish as real ones would.

- :mod:`~wattlake.devices.sim.loads`: the household model (power as a function of time).
- :mod:`~wattlake.devices.sim.rpc`: the meters' memory and the RPC calls they answer.
- :mod:`~wattlake.devices.sim.simulator`: the fleet, its payloads and the MQTT publisher.

It plays devices, so it sits in ``devices/``; nothing outside it imports it but the composition
root, the CLI, tests and benchmarks. Imports run one way: simulator -> rpc, simulator -> loads.
"""
