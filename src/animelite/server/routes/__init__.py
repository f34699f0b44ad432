"""The HTTP routes, one router per area: the page, stylizing, the style catalog, operations.

Each module's ``add_routes(app, service)`` registers its routes (and static
mounts) on the app; :func:`animelite.server.app.create_app` calls them.
"""

from . import ops, pages, styles, stylize

__all__ = ["ops", "pages", "styles", "stylize"]
