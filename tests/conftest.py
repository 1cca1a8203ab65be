from hypothesis import Phase, settings

# Shared, noisy 2-core machines: examples are judged by what they assert, never by wall time.
# No "explain" phase: its line tracing makes a whole simulated run crawl while a failure shrinks.
settings.register_profile("default", deadline=None, phases=[p for p in Phase if p is not Phase.explain])
settings.load_profile("default")
