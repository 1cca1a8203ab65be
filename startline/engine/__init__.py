"""The coordination core: no backend, simulator, CLI or driver is imported here."""
