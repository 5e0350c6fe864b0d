"""tegrastats: the pure line parser, the subprocess runner, the `edgeagent tegrastats` command."""
