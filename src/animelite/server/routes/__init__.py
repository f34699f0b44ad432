"""The HTTP routes, one router per area: the page, stylizing, video jobs, the live camera, the catalog, operations.

Each module's ``add_routes(app, service)`` registers its routes (and static
mounts) on the app; :func:`animelite.server.app.create_app` calls them.
"""

from . import jobs, live, ops, pages, styles, stylize

__all__ = ["jobs", "live", "ops", "pages", "styles", "stylize"]
