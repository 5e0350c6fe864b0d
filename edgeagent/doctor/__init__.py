"""`edgeagent doctor`: small checks, each returning results with evidence and a fix."""
