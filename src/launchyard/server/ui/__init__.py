"""The web UI: server-rendered pages behind the same API keys as /api/v1.

``routes.router`` holds the pages and the small endpoints their script calls;
``session`` turns an API key into a signed session cookie. See docs/ui.md.
"""
