"""tegrastats: the pure line parser, the subprocess runner and the `edgeagent tegrastats` command."""
