"""The runs a user keeps: every ``startline run`` registers itself (``entry.py``: its key figures)
in a catalogue (``store.py``: SQLite in STARTLINE_HOME, or a shared PostgreSQL database), which
``startline runs …`` lists, tags and names baselines in (``commands.py``)."""

from startline.catalogue.entry import Entry, entry_of
from startline.catalogue.store import Catalogue, CatalogueError, open_catalogue

__all__ = ["Catalogue", "CatalogueError", "Entry", "entry_of", "open_catalogue"]
