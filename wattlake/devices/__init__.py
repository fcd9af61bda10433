"""Device formats: one module and one descriptor each, listed in the table of formats
(:mod:`wattlake.devices.formats`); the router and the identity rule that read it; and the
simulator (:mod:`wattlake.devices.sim`)."""
