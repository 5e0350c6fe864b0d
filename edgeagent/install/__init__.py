"""Installing edgeagent as a systemd service: where it lives and its unit (``layout``), the pyz
it installs from (``pyz``), and the `install`/`uninstall` commands (``command``). doctor reads
the same layout to check an installation."""
