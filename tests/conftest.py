from hypothesis import settings

# Shared, noisy 2-core machines: examples are judged by what they assert, never by wall time.
settings.register_profile("default", deadline=None)
settings.load_profile("default")
