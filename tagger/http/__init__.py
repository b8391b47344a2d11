"""HTTP: `tagger serve` (the upstream session_manager routes, /api/v1, login)."""

from tagger.http.app import create_app
from tagger.http.deps import Services
from tagger.http.serve import serve

__all__ = ["Services", "create_app", "serve"]
