"""The device side: the v2 client (``client``), image and encoder pairs (``pairs``, ``stages``,
``adapt``), a split causal LM (``lm``) and the speculative draft (``speculative``). It opens an
export with :func:`aiflow_cli.export.opened.open_export` and never imports the server."""
