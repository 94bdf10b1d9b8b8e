"""Measured studies over device, link and server together: ``bench`` (each pair over each link
against the plan), ``spec_study`` (speculative decoding against k) and their plots. They start servers
with :class:`aiflow_cli.serve.launch.ServerProcess`."""
