"""Real peers for the tests, sharing no code with the agent: the grpcio kubelet (messages from
the kubelet's protos by grpc_tools), the HTTPS Kubernetes API server, Prometheus, and fake hosts."""
