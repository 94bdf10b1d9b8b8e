"""An emulated link between device and server: a shaping TCP proxy (``proxy``)."""
