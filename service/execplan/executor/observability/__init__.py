"""How the engine is watched from outside, without changing what it decides.

    observer.py   the `EngineObserver` hooks the runtime calls after the fact
    metrics.py    Prometheus metrics (`MetricsObserver`)
    tracing.py    OpenTelemetry spans of executions and attempts (`TracingObserver`),
                  and OTLP export configured from the environment
    eventlog.py   one structured log line per notable event (`EventLogObserver`)

The server's composition root adds the observers to `engine.observers`; tests add
their own.
"""
