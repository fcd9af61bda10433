"""Device formats: decoders from vendor payloads to canonical readings, and the simulator."""
