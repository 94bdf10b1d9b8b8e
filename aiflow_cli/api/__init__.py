"""One library entry per verb, each taking one settings object (defaults and checks live there once).

=====================  ======================  ==========================================
entry                  settings                command
=====================  ======================  ==========================================
``profile``            ``ProfileSettings``     ``aiflow profile``
``plan``               ``PlanSettings``        ``aiflow split`` (``split plan``)
``train_bottleneck``   ``BottleneckSettings``  ``aiflow split bottleneck``
``measure_exits``      ``ExitsSettings``       ``aiflow split exits``
``verify_export``      ``VerifySettings``      ``aiflow split verify``
``export_speculative`` ``SpeculativeSettings`` ``aiflow split speculative``
``compress``           ``CompressSettings``    ``aiflow compress``
``serve``              ``ServeSettings``       ``aiflow serve-pair server``
``run_link``           ``LinkSettings``        ``aiflow serve-pair link``
``run_device``         ``DeviceSettings``      ``aiflow serve-pair device``
``generate``           ``GenerateSettings``    ``aiflow serve-pair generate``
``bench``              ``BenchSettings``       ``aiflow serve-pair bench``
=====================  ======================  ==========================================

The modules import only pydantic and the schemas at load time (heavy work is imported inside each
entry), so a command's ``--help`` stays fast.
"""
