"""The wire layer: the only package that imports grpc.

Servicers (`planner_servicer`, `executor_servicer`, `worker_servicer`), proto <->
domain codecs (`plan_codec`, ...) and the one error table (`status`). Domain code
below this package never sees a protobuf message or a gRPC context.
"""
