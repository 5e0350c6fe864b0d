"""edgeagent: a Jetson/devicetree board as a first-class Kubernetes GPU node, in one process."""

__version__ = "0.1.0"
