"""Search as a service: ``asymret serve`` (FastAPI + uvicorn) — the index behind HTTP, a web page, hot swap."""
from .app import ServiceConfig, create_app
from .state import GalleryImages, IndexSlot, MicroBatcher

__all__ = ["ServiceConfig", "create_app", "IndexSlot", "MicroBatcher", "GalleryImages"]
