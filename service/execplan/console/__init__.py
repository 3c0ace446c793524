"""The web console: the browser app (built from clients/web) and the HTTP server
that serves it next to the gRPC port (docs/console.md).

    console = ConsoleServer(listen, app, tls=...)   # built by execplan.server
    await console.start(); ...; await console.stop()
"""
